"""The Hugging Face export computes what our model computes."""

import pytest
import torch

from train import rundir
from train.data import build_tokenizer
from train.export import ExportError, export, main
from train.model import GPT, GPTConfig

transformers = pytest.importorskip("transformers")  # the optional `hf` extra


def make_run(run_dir, **model):
    """A run directory with one checkpoint of random weights (no training needed)."""
    run_dir.mkdir(parents=True)
    tokenizer = build_tokenizer([f"r{i}" for i in range(40)])
    tokenizer.save(str(run_dir / rundir.TOKENIZER))
    torch.manual_seed(0)
    cfg = GPTConfig(vocab_size=tokenizer.get_vocab_size(), n_layer=2, n_ctx=16, init_std=0.2, **model)
    gpt = GPT(cfg)
    with torch.no_grad():  # nonzero biases and LayerNorm affines, so that each mapping is exercised
        for name, p in gpt.named_parameters():
            if name.endswith("bias") or "ln" in name:
                p.add_(0.1 * torch.randn_like(p))
    file = rundir.weights_file(7)
    rundir.append_manifest(run_dir, {"step": 7, "tokens": 0, "file": file,
                                     "sha256": rundir.save_weights(run_dir / file, gpt, 7)})
    return gpt.eval()


@pytest.mark.parametrize("model", [{}, {"attn_only": True}, {"tied_embeddings": True}], ids=["default", "attn_only", "tied"])
def test_exported_logits_equal_ours(tmp_path, model):
    ours = make_run(tmp_path / "run", **model)
    out = export(tmp_path / "run", tmp_path / "hf")
    hf = transformers.AutoModelForCausalLM.from_pretrained(out).eval()
    tokens = torch.randint(4, ours.cfg.vocab_size, (3, 16), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        expected, got = ours(tokens), hf(tokens).logits
    assert expected.abs().max() > 1.0  # logits far from 0: the comparison has something to compare
    assert torch.allclose(got, expected, atol=1e-4, rtol=0), (got - expected).abs().max()


def test_exported_tokenizer_is_the_runs(tmp_path):
    make_run(tmp_path / "run")
    out = export(tmp_path / "run", tmp_path / "hf")
    ours = build_tokenizer([f"r{i}" for i in range(40)])
    theirs = transformers.AutoTokenizer.from_pretrained(out)
    assert theirs("r3 r17 r0")["input_ids"] == ours.encode("r3 r17 r0").ids
    assert (theirs.bos_token, theirs.eos_token, theirs.pad_token) == ("[BOS]", "[EOS]", "[PAD]")
    assert theirs.bos_token_id == ours.token_to_id("[BOS]") == 1


def test_a_model_without_layernorm_is_refused_with_the_reason(tmp_path, capsys):
    make_run(tmp_path / "run", layer_norm=False)
    with pytest.raises(ExportError, match="no LayerNorm"):
        export(tmp_path / "run", tmp_path / "hf")
    assert main([str(tmp_path / "run"), f"out={tmp_path / 'hf'}", "step=3"]) == 2
    assert "no checkpoint for step 3" in capsys.readouterr().err
    assert not (tmp_path / "hf").exists()


def test_a_model_with_positions_in_queries_and_keys_alone_is_refused(tmp_path):
    make_run(tmp_path / "run", positions="qk")
    with pytest.raises(ExportError, match="positions=qk"):
        export(tmp_path / "run", tmp_path / "hf")
    assert not (tmp_path / "hf").exists()
