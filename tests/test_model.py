from pathlib import Path

import pytest
import torch
import yaml

from train.hooks import act_name, hook_layer
from train.model import GPT, IGNORE_INDEX, lm_loss
from train.model_config import ASPECT_RATIO, HEAD_SIZE, GPTConfig

SIZES = sorted(Path(__file__).resolve().parents[1].glob("conf/model/*.yaml"))


def tiny(**kw) -> GPT:
    torch.manual_seed(0)
    return GPT(GPTConfig(vocab_size=50, n_layer=2, n_ctx=16, **kw)).eval()


def closed_form_params(vocab: int, n_ctx: int, L: int, d: int, attn_only=False, tied=False, ln=True) -> tuple[int, int]:
    """(total, non-embedding) for pre-LN blocks with biases; unembedding without bias."""
    norm = 2 * d if ln else 0  # a LayerNorm's gain and bias
    attn = 4 * d * d + 4 * d  # qkv and output projections with biases
    mlp = 8 * d * d + 5 * d  # d -> 4d -> d with biases
    block = norm + attn + (0 if attn_only else norm + mlp)  # LayerNorm(s) + sublayers
    non_embedding = L * block + norm  # + final LayerNorm
    embedding = vocab * d + n_ctx * d + (0 if tied else vocab * d)
    return non_embedding + embedding, non_embedding


def test_output_shape():
    model = tiny()
    assert model(torch.randint(0, 50, (3, 16))).shape == (3, 16, 50)


def test_longer_than_context_is_an_error():
    with pytest.raises(ValueError, match="exceeds the model's context"):
        tiny()(torch.zeros(1, 17, dtype=torch.long))


@pytest.mark.parametrize("kw", [{}, {"attn_only": True}, {"positions": "qk"}], ids=["default", "attn_only", "qk"])
def test_causality(kw):
    model = tiny(**kw)
    tokens = torch.randint(0, 50, (2, 16))
    changed = tokens.clone()
    changed[:, 10:] = (changed[:, 10:] + 1) % 50
    with torch.no_grad():
        a, b = model(tokens), model(changed)
    torch.testing.assert_close(a[:, :10], b[:, :10])
    assert not torch.allclose(a[:, 10:], b[:, 10:])


def test_hook_names_and_shapes():
    model = tiny()
    logits, cache = model.run_with_cache(torch.randint(0, 50, (2, 16)))
    d, H = model.cfg.d_model, model.cfg.n_head
    expected = {
        "hook_embed": (2, 16, d), "hook_pos_embed": (16, d), "ln_final.hook_normalized": (2, 16, d),
        "blocks.1.hook_resid_pre": (2, 16, d), "blocks.1.hook_resid_mid": (2, 16, d),
        "blocks.1.hook_resid_post": (2, 16, d), "blocks.0.hook_attn_out": (2, 16, d),
        "blocks.0.hook_mlp_out": (2, 16, d), "blocks.0.mlp.hook_pre": (2, 16, 4 * d),
        "blocks.0.mlp.hook_post": (2, 16, 4 * d), "blocks.0.attn.hook_q": (2, 16, H, d // H),
        "blocks.0.attn.hook_k": (2, 16, H, d // H), "blocks.0.attn.hook_v": (2, 16, H, d // H),
        "blocks.0.attn.hook_z": (2, 16, H, d // H), "blocks.0.attn.hook_pattern": (2, H, 16, 16),
        "blocks.0.attn.hook_attn_scores": (2, H, 16, 16),
    }
    for name, shape in expected.items():
        assert tuple(cache[name].shape) == shape, name
    assert len(cache) == len(model.hook_points) == 2 + 2 * 13 + 1  # embed, pos, 13 per block, final LN
    pattern = cache["blocks.0.attn.hook_pattern"]
    torch.testing.assert_close(pattern.sum(-1), torch.ones(2, H, 16))  # rows are distributions
    assert pattern.triu(1).abs().max() == 0  # causal: no weight on later tokens
    torch.testing.assert_close(cache["blocks.1.hook_resid_post"], cache["blocks.1.hook_resid_mid"]
                               + cache["blocks.1.hook_mlp_out"])


@pytest.mark.parametrize("positions", ["residual", "qk"])
def test_every_hook_holds_what_its_transformerlens_namesake_holds(positions):
    """Each hook recomputed by hand from the weights, by TransformerLens's definitions
    (`ln_final.hook_normalized`: (x - mean) / sqrt(var + eps), before the LayerNorm's weight and bias, as
    TransformerLens's own module hooks it: the next test runs that module). With
    positions="qk" the residual stream starts from the token embeddings alone, and the queries
    and keys read LN(resid + positions) while the values read LN(resid)."""
    model = tiny(positions=positions)
    with torch.no_grad():  # non-trivial LayerNorm weights and biases, so that the affine part shows
        for module in model.modules():
            if isinstance(module, torch.nn.LayerNorm):
                module.weight.normal_(1.0, 0.3), module.bias.normal_(0.0, 0.3)
    tokens = torch.randint(0, 50, (2, 16))
    logits, cache = model.run_with_cache(tokens)
    d, H = model.cfg.d_model, model.cfg.n_head
    D = d // H

    def ln(x, module):
        centred = x - x.mean(-1, keepdim=True)
        return centred / (centred.pow(2).mean(-1, keepdim=True) + module.eps).sqrt() * module.weight + module.bias

    def heads(x):  # (B, T, d) -> (B, T, H, D)
        return x.view(2, 16, H, D)

    close = lambda a, b: torch.testing.assert_close(a, b, atol=2e-5, rtol=1e-4)  # noqa: E731
    close(cache["hook_embed"], model.wte.weight[tokens])
    close(cache["hook_pos_embed"], model.wpe.weight[:16])
    qk = positions == "qk"
    resid = cache["hook_embed"] + (0 if qk else cache["hook_pos_embed"])
    for i, block in enumerate(model.blocks):
        close(cache[f"blocks.{i}.hook_resid_pre"], resid)
        w_q, w_k, w_v = block.attn.qkv.weight.split(d)
        b_q, b_k, b_v = block.attn.qkv.bias.split(d)
        x = ln(resid, block.ln1)
        x_qk = ln(resid + cache["hook_pos_embed"], block.ln1) if qk else x
        q, k, v = heads(x_qk @ w_q.T + b_q), heads(x_qk @ w_k.T + b_k), heads(x @ w_v.T + b_v)
        for name, value in (("q", q), ("k", k), ("v", v)):
            close(cache[f"blocks.{i}.attn.hook_{name}"], value)
        scores = torch.einsum("bqhd,bkhd->bhqk", q, k) / D**0.5
        scores = scores.masked_fill(torch.ones(16, 16, dtype=torch.bool).triu(1), float("-inf"))
        close(cache[f"blocks.{i}.attn.hook_attn_scores"], scores)  # masked with -inf, before the softmax
        pattern = scores.softmax(-1)
        close(cache[f"blocks.{i}.attn.hook_pattern"], pattern)
        z = torch.einsum("bhqk,bkhd->bqhd", pattern, v)
        close(cache[f"blocks.{i}.attn.hook_z"], z)
        attn_out = z.reshape(2, 16, d) @ block.attn.out.weight.T + block.attn.out.bias
        close(cache[f"blocks.{i}.hook_attn_out"], attn_out)
        resid = resid + attn_out
        close(cache[f"blocks.{i}.hook_resid_mid"], resid)
        pre = ln(resid, block.ln2) @ block.mlp.fc_in.weight.T + block.mlp.fc_in.bias
        close(cache[f"blocks.{i}.mlp.hook_pre"], pre)
        post = torch.nn.functional.gelu(pre)
        close(cache[f"blocks.{i}.mlp.hook_post"], post)
        mlp_out = post @ block.mlp.fc_out.weight.T + block.mlp.fc_out.bias
        close(cache[f"blocks.{i}.hook_mlp_out"], mlp_out)
        resid = resid + mlp_out
        close(cache[f"blocks.{i}.hook_resid_post"], resid)
    close(cache["ln_final.hook_normalized"], torch.nn.functional.layer_norm(resid, (d,), eps=model.ln_final.eps))
    close(logits, ln(resid, model.ln_final) @ model.lm_head.weight.T)


def test_the_final_normalized_hook_holds_what_transformerlens_own_layernorm_hooks():
    """TransformerLens's normalization module (4.x: the bridge's NormalizationBridge), run on
    the same final residual stream with the same LayerNorm weights: its hook_normalized holds
    (x - mean) / sqrt(var + eps), before the weight and bias, and so does ours; the outputs agree."""
    from types import SimpleNamespace

    from transformer_lens.model_bridge.generalized_components.normalization import NormalizationBridge

    model = tiny()
    with torch.no_grad():  # non-trivial weight and bias: hooked before or after them differ
        model.ln_final.weight.normal_(1.0, 0.3), model.ln_final.bias.normal_(0.0, 0.3)
    _, cache = model.run_with_cache(torch.randint(0, 50, (2, 16)))
    resid = cache[f"blocks.{model.cfg.n_layer - 1}.hook_resid_post"]
    theirs = NormalizationBridge("ln_final", SimpleNamespace(eps=model.ln_final.eps))
    theirs.set_original_component(model.ln_final)
    seen = {}
    theirs.hook_normalized.add_hook(lambda tensor, hook: seen.update(normalized=tensor.detach().clone()))
    with torch.no_grad():
        out = theirs(resid)
    torch.testing.assert_close(cache["ln_final.hook_normalized"], seen["normalized"], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(model.ln_final(resid), out, atol=1e-5, rtol=1e-5)
    assert not torch.allclose(seen["normalized"], out, atol=1e-2)  # the weight and bias do change it


def test_names_filter_and_no_hook_left_behind():
    model = tiny()
    tokens = torch.randint(0, 50, (1, 16))
    _, cache = model.run_with_cache(tokens, names_filter=lambda n: n.endswith("hook_pattern"))
    assert sorted(cache) == ["blocks.0.attn.hook_pattern", "blocks.1.attn.hook_pattern"]
    _, cache = model.run_with_cache(tokens, names_filter="blocks.1.hook_resid_post")
    assert list(cache) == ["blocks.1.hook_resid_post"]
    with pytest.raises(KeyError, match="no hook point named"):
        model.run_with_cache(tokens, names_filter=["blocks.9.hook_resid_post"])
    with pytest.raises(RuntimeError, match="boom"), model.hooks([("hook_embed", lambda x, hook: x)]):
        raise RuntimeError("boom")
    assert all(not m._forward_hooks for m in model.modules())


def test_act_name_gives_transformerlens_names():
    assert act_name("pattern", 1) == "blocks.1.attn.hook_pattern"
    assert act_name("resid_pre", 0) == "blocks.0.hook_resid_pre"
    assert act_name("post", 1) == "blocks.1.mlp.hook_post"
    assert act_name("embed") == "hook_embed" and act_name("pos_embed") == "hook_pos_embed"
    assert act_name("normalized") == "ln_final.hook_normalized"
    assert act_name("blocks.0.attn.hook_q") == "blocks.0.attn.hook_q"  # a full name passes through
    for bad in [("pattern", None), ("embed", 0), ("normalized", 0), ("patern", 1)]:
        with pytest.raises(ValueError):
            act_name(*bad)


@pytest.mark.parametrize("attn_only", [False, True])
def test_every_hook_point_round_trips_through_act_name_and_hook_layer(attn_only):
    model = tiny(attn_only=attn_only)
    for name in model.hook_points:
        short = name.rsplit("hook_", 1)[1]  # "blocks.1.attn.hook_pattern" -> "pattern"
        assert act_name(short, hook_layer(name)) == name
        assert act_name(name) == name
    assert [hook_layer(n) for n in ("blocks.1.mlp.hook_pre", "hook_embed", "ln_final.hook_normalized")] == [1, None, None]


def test_hooks_can_edit_activations():
    model = tiny()
    tokens = torch.randint(0, 50, (1, 16))
    zero_attn = [(f"blocks.{i}.hook_attn_out", lambda x, hook: torch.zeros_like(x)) for i in range(2)]
    with model.hooks(zero_attn):
        edited = model(tokens)
    assert not torch.allclose(edited, model(tokens))


def test_fused_and_explicit_attention_agree():
    """SDPA (no pattern hook) and the materialized pattern (hook active) give one model."""
    model = tiny()
    tokens = torch.randint(0, 50, (2, 16))
    with torch.no_grad():
        fused = model(tokens)
        explicit, _ = model.run_with_cache(tokens, names_filter="blocks.0.attn.hook_pattern")
    torch.testing.assert_close(fused, explicit, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("kw", [{}, {"attn_only": True}, {"positions": "qk"}, {"layer_norm": False}],
                         ids=["default", "attn_only", "qk", "no_ln"])
def test_logits_at_chosen_positions_are_those_of_the_whole_forward_pass(kw):
    """model(tokens, at=...) computes the last block at those positions alone: the same logits
    there, and the same gradients, as the whole pass (the LLC's sampler takes its loss there)."""
    model = tiny(**kw)
    tokens = torch.randint(0, 50, (3, 16))
    at = torch.tensor([0, 6, 15])
    whole = model(tokens)
    torch.testing.assert_close(model(tokens, at=at), whole[:, at], atol=1e-6, rtol=1e-5)
    grads = [torch.autograd.grad(out.logsumexp(-1).sum(), list(model.parameters()), allow_unused=True)
             for out in (whole[:, at], model(tokens, at=at))]
    for g_whole, g_at in zip(*grads):
        torch.testing.assert_close(g_at, g_whole, atol=1e-6, rtol=1e-4)
    patterns = []  # with the pattern hook on, the explicit attention: the pattern's rows at those positions
    with torch.no_grad(), model.hooks([("blocks.1.attn.hook_pattern", lambda t, hook: patterns.append(t))]):
        torch.testing.assert_close(model(tokens, at=at), whole[:, at], atol=1e-6, rtol=1e-5)
        model(tokens)
    torch.testing.assert_close(patterns[0], patterns[1][:, :, at])


def test_positions_given_as_a_mask_are_an_error_naming_at():
    with pytest.raises(ValueError, match="at= takes positions as a 1-D integer tensor"):
        tiny()(torch.zeros(1, 8, dtype=torch.long), at=torch.ones(8, dtype=torch.bool))


@pytest.mark.parametrize("attn_only,tied,ln", [(False, False, True), (True, False, True), (False, True, True),
                                                (False, False, False), (True, False, False)])
def test_parameter_count_variants(attn_only, tied, ln):
    model = tiny(attn_only=attn_only, tied_embeddings=tied, layer_norm=ln)
    total, non_embedding = closed_form_params(50, 16, 2, 2 * ASPECT_RATIO, attn_only, tied, ln)
    assert (model.n_params(), model.n_params_non_embedding()) == (total, non_embedding)
    assert any(isinstance(m, torch.nn.LayerNorm) for m in model.modules()) == ln


def test_without_layer_norm_the_residual_stream_reaches_the_unembedding_unchanged():
    model = tiny(layer_norm=False)
    tokens = torch.randint(0, 50, (2, 16))
    logits, cache = model.run_with_cache(tokens)
    torch.testing.assert_close(cache["ln_final.hook_normalized"], cache["blocks.1.hook_resid_post"])
    torch.testing.assert_close(logits, cache["blocks.1.hook_resid_post"] @ model.lm_head.weight.T)


@pytest.mark.parametrize("init_std", [0.02, 0.1])
def test_init_std_sets_the_scale_of_every_weight_matrix(init_std):
    model = tiny(init_std=init_std, d_model=256, n_head=8)  # large matrices: sample std within ~1%
    for name, p in model.named_parameters():
        if p.dim() == 2:
            # GPT-2: residual projections are scaled down by sqrt(2 * n_layer)
            expected = init_std / 2 if name.endswith(("attn.out.weight", "fc_out.weight")) else init_std
            assert p.std().item() == pytest.approx(expected, rel=0.05), name


@pytest.mark.parametrize("size_file", SIZES, ids=lambda p: p.stem)
def test_every_size_follows_the_shape_rule_and_its_name(size_file):
    size = yaml.safe_load(size_file.read_text())
    cfg = GPTConfig(vocab_size=128, n_ctx=64, n_layer=size["n_layer"], name=size["name"])
    # the shape rule holds for every size, one head (13k) included: d_model = 32 * n_layer, heads of 32
    assert cfg.d_model == ASPECT_RATIO * cfg.n_layer
    assert cfg.d_head == HEAD_SIZE and cfg.n_head == cfg.d_model // HEAD_SIZE
    with torch.device("meta"):  # counts without allocating 100M parameters
        model = GPT(cfg)
    assert model.blocks[0].attn.n_head == cfg.n_head and model.blocks[0].attn.d_head == HEAD_SIZE
    total, non_embedding = closed_form_params(128, 64, cfg.n_layer, cfg.d_model)
    assert (model.n_params(), model.n_params_non_embedding()) == (total, non_embedding)
    # and the size file's first line says so
    assert size_file.read_text().splitlines()[0] == (
        f"# {non_embedding:,} non-embedding parameters: n_layer={cfg.n_layer}, d_model={cfg.d_model}, "
        f"{cfg.n_head} head(s) of {cfg.d_head}")
    name = size["name"]
    named = float(name[:-1]) * {"k": 1e3, "m": 1e6}[name[-1]]
    assert abs(named - non_embedding) / non_embedding < 0.05, f"{name} has {non_embedding:,} non-embedding params"


def test_family_spans_four_orders_of_magnitude():
    counts = [GPTConfig(vocab_size=128, n_layer=yaml.safe_load(p.read_text())["n_layer"]) for p in SIZES]
    n = [L.n_layer * (12 * L.d_model**2 + 13 * L.d_model) for L in counts]
    assert len(SIZES) >= 6 and min(n) <= 2e4 and max(n) >= 9.5e7


@pytest.mark.parametrize("attn_only", [False, True])
def test_palm_flops_per_token_matches_pytorchs_flop_counter(attn_only):
    """The MFU numerator against an independent count: PyTorch's FlopCounterMode over one
    forward and backward pass. A hook on each attention pattern makes attention plain matrix
    products the counter sees; biases and LayerNorm weights are in N (PaLM's and nanoGPT's
    convention) though no matrix multiply uses them."""
    from torch.utils.flop_counter import FlopCounterMode

    model = GPT(GPTConfig(vocab_size=50, n_layer=2, n_ctx=16, attn_only=attn_only))
    tokens = torch.randint(0, 50, (3, 16))
    patterns = [(f"blocks.{i}.attn.hook_pattern", lambda t, hook: None) for i in range(2)]
    with FlopCounterMode(display=False) as counter, model.hooks(patterns):
        model(tokens).sum().backward()
    not_in_matmuls = sum(p.numel() for name, p in model.named_parameters()
                         if p.dim() < 2 and not name.startswith(("wte", "wpe")))
    counted_per_token = counter.get_total_flops() / tokens.numel()
    assert model.palm_flops_per_token() == pytest.approx(counted_per_token + 6 * not_in_matmuls, rel=1e-12)


def test_lm_loss_averages_over_the_targets_that_are_not_ignored():
    logits = torch.randn(2, 5, 7)
    targets = torch.randint(0, 7, (2, 5))
    kept = torch.tensor([[0, 1, 0, 0, 1], [1, 0, 0, 0, 0]], dtype=torch.bool)
    by_hand = -torch.stack([logits[b, t].log_softmax(-1)[targets[b, t]] for b, t in kept.nonzero().tolist()])
    masked = torch.where(kept, targets, IGNORE_INDEX)
    assert torch.allclose(lm_loss(logits, masked), by_hand.mean())
    assert torch.allclose(lm_loss(logits, masked, reduction="sum"), by_hand.sum())
    assert lm_loss(logits, torch.full_like(targets, IGNORE_INDEX)).item() == 0.0  # no target: 0, not NaN
