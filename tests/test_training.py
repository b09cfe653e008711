import hashlib
import json
import math
import pickle
import re
import subprocess
import sys

import pandas as pd
import pytest
import torch
from conftest import REPO
from tokenizers import Tokenizer
from wandb_offline import history, logged_steps, recorded_exit_code, run_files

from train import rundir
from train.build import tokens_per_step
from train.checkpointing import ScheduledCheckpoints, checkpoint_steps
from train.config import ConfigError
from train.data import InMemoryBlocks, StepBatchSampler, build_corpus
from train.runner import run_training

DEBUG_STEPS = [0, 1, 2, 4, 8, 10, 16, 20, 30, 32, 40]  # debug=default's checkpoints: 0, powers of two, every 10


def sha256(path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_short_run_writes_exactly_the_scheduled_checkpoints(compose_debug):
    cfg = compose_debug()
    assert checkpoint_steps(cfg.trainer.max_steps, cfg.schedule.log2_max, cfg.schedule.every,
                            cfg.schedule.extra) == DEBUG_STEPS
    run_dir = run_training(cfg)
    rows = rundir.read_manifest(run_dir)
    info = rundir.read_run_json(run_dir)
    assert [r["step"] for r in rows] == DEBUG_STEPS
    assert sorted(p.name for p in run_dir.glob("*.safetensors")) == [r["file"] for r in rows]
    for row in rows:
        assert sha256(run_dir / row["file"]) == row["sha256"]
        assert row["tokens"] == row["step"] * info["tokens_per_step"] == row["step"] * 8 * 32
    assert info["status"] == "completed" and info["model"] == "13k" and info["seed"] == 0
    model = rundir.load_model(run_dir, 40)
    assert (info["n_params"], info["n_params_non_embedding"]) == (model.n_params(), model.n_params_non_embedding())
    assert info["config"]["trainer"]["max_steps"] == 40 and info["versions"]["torch"].startswith("2.")
    assert rows[0]["train_loss"] is None
    assert rows[-1]["val_loss"] < rows[0]["val_loss"] - 0.5  # it learns: loss falls
    assert rows[-1]["train_loss"] < rows[1]["train_loss"] - 0.5
    # the tokenizer saved with the run is the one that made the probe items' ids
    tokenizer = Tokenizer.from_file(str(run_dir / "tokenizer.json"))
    assert tokenizer.get_vocab_size() == model.cfg.vocab_size
    for item in rundir.read_probe_items(run_dir)[:10]:
        assert tokenizer.decode(item["prompt_ids"], skip_special_tokens=False) == f"[BOS] {item['prompt']}"
    assert rundir.load_resume_state(run_dir / "resume" / "last.ckpt")["global_step"] == 40


def test_the_trainer_takes_the_documented_plain_pytorch_steps(compose_debug):
    """From the same step-0 weights and the same batches, 40 steps of a plain PyTorch loop
    written from the documented recipe reach the weights the Trainer saved: next-token
    cross-entropy, AdamW (lr, betas; weight decay on matrices, embeddings included, never on
    biases or norms), the gradient norm clipped to 1, and the LR multiplier linear from
    1/warmup to 1 over the warmup steps, then cosine down to min_lr_ratio at max_steps.
    (Clipped with the parameters in another order, a key bias whose gradient is pure rounding
    noise drifts by 4e-6 by step 40, through Adam's normalization; everything else agrees.)"""
    cfg = compose_debug("optim.min_lr_ratio=0.2")  # a non-default floor: the schedule must read it
    run_dir = run_training(cfg)
    model = rundir.load_model(run_dir, 0).train()
    blocks = InMemoryBlocks(build_corpus(cfg.data).train)
    sampler = StepBatchSampler(len(blocks), cfg.data.batch_size, cfg.seed)
    matrices = [p for p in model.parameters() if p.dim() >= 2]
    others = [p for p in model.parameters() if p.dim() < 2]
    optimizer = torch.optim.AdamW([{"params": matrices, "weight_decay": 0.1}, {"params": others, "weight_decay": 0.0}],
                                  lr=1e-3, betas=(0.9, 0.95))
    warmup, steps, floor = cfg.optim.warmup_steps, cfg.trainer.max_steps, 0.2
    for step in range(steps):
        cosine = 0.5 * (1 + math.cos(math.pi * (step - warmup) / (steps - warmup)))
        for group in optimizer.param_groups:
            group["lr"] = 1e-3 * ((step + 1) / warmup if step < warmup else floor + (1 - floor) * cosine)
        tokens = blocks[sampler.batch(step)]["input_ids"]  # (B, T + 1)
        logits = model(tokens[:, :-1])
        loss = torch.nn.functional.cross_entropy(logits.flatten(0, 1), tokens[:, 1:].flatten())
        optimizer.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(matrices + others, 1.0)  # summed in the optimizer's order, as Lightning does
        optimizer.step()
    trained = rundir.load_model(run_dir, steps).state_dict()
    assert all(torch.equal(value, trained[name]) for name, value in model.state_dict().items())  # to the bit


def test_answer_only_loss_is_the_loss_on_the_answers(compose_debug):
    cfg = compose_debug("data.loss_on=answer")
    run_dir = run_training(cfg)
    rows = rundir.read_manifest(run_dir)
    # the held-out loss by hand: the final model's loss on each token that follows "=" (in an
    # example that starts in the block)
    corpus = build_corpus(cfg.data)
    blocks = corpus.heldout["modular_addition"][: cfg.data.val_batches * cfg.data.batch_size]["input_ids"]
    model = rundir.load_model(run_dir, 40)
    with torch.no_grad():
        logprobs = model(blocks[:, :-1]).log_softmax(-1)
    first_bos = (blocks == corpus.tokenizer.token_to_id("[BOS]")).int().argmax(dim=1, keepdim=True)
    whole = torch.arange(blocks.shape[1] - 1) >= first_bos  # the example starts in this block
    is_answer = (blocks[:, :-1] == corpus.tokenizer.token_to_id("=")) & whole
    targets = blocks[:, 1:]
    by_hand = -logprobs.gather(-1, targets[..., None])[..., 0][is_answer].mean().item()
    assert rows[-1]["val_loss"] == pytest.approx(by_hand, rel=1e-5)


def test_checkpoints_load_without_pickle(compose_debug, monkeypatch):
    run_dir = run_training(compose_debug())

    def refuse(*args, **kwargs):
        raise AssertionError("pickle was used")

    monkeypatch.setattr(pickle, "loads", refuse)
    monkeypatch.setattr(pickle, "load", refuse)
    monkeypatch.setattr(pickle, "Unpickler", refuse)
    monkeypatch.setattr(torch, "load", refuse)
    for row in rundir.read_manifest(run_dir):
        model = rundir.load_model(run_dir, row["step"])
        assert model.cfg.name == "13k" and not model.training
    monkeypatch.undo()
    state = rundir.load_resume_state(run_dir / rundir.RESUME_STATE)  # torch's weights_only loader
    assert state["global_step"] == 40 and "rng_states" in state


def test_tampered_checkpoint_is_refused(compose_debug):
    run_dir = run_training(compose_debug())
    path = run_dir / rundir.weights_file(8)
    data = bytearray(path.read_bytes())
    data[-1] ^= 0xFF
    path.write_bytes(bytes(data))
    with pytest.raises(rundir.CheckpointError, match="does not match the manifest"):
        rundir.load_model(run_dir, 8)
    path.write_bytes(bytes(data[: len(data) // 2]))
    with pytest.raises(rundir.CheckpointError, match="corrupt"):
        rundir.load_model(run_dir, 8, verify=False)


def test_rerun_after_completion_does_nothing(compose_debug, capsys):
    cfg = compose_debug()
    run_dir = run_training(cfg)
    before = {p.name: p.stat().st_mtime_ns for p in run_dir.iterdir() if p.is_file()}
    run_training(cfg)
    assert "already completed (11 checkpoints); nothing to do" in capsys.readouterr().out
    assert before == {p.name: p.stat().st_mtime_ns for p in run_dir.iterdir() if p.is_file()}


def test_resume_after_interruption_is_bitwise_identical(compose_debug, monkeypatch):
    reference = run_training(compose_debug("experiment_name=uninterrupted"))

    original = ScheduledCheckpoints.on_train_batch_end

    def crash_at_step_23(self, trainer, *args):
        original(self, trainer, *args)
        if trainer.global_step == 23:
            raise RuntimeError("simulated crash")

    # a training row every step: the crash at 23 comes after steps 21-23 were logged, which the
    # resumed run (from the resume state at 20) trains again
    cfg = compose_debug("experiment_name=interrupted", "logger=wandb", "trainer.log_every_n_steps=1")
    monkeypatch.setattr(ScheduledCheckpoints, "on_train_batch_end", crash_at_step_23)
    with pytest.raises(RuntimeError, match="simulated crash"):
        run_training(cfg)
    run_dir = cfg.run_dir
    assert rundir.read_run_json(run_dir)["status"] == "failed: RuntimeError: simulated crash"
    assert [r["step"] for r in rundir.read_manifest(run_dir)] == [s for s in DEBUG_STEPS if s <= 23]
    monkeypatch.undo()

    run_training(cfg)  # resumes from the step-20 resume state
    resumed, uninterrupted = rundir.read_manifest(run_dir), rundir.read_manifest(reference)
    assert [r["step"] for r in resumed] == DEBUG_STEPS
    assert [r["sha256"] for r in resumed] == [r["sha256"] for r in uninterrupted]
    assert [r["val_loss"] for r in resumed] == [r["val_loss"] for r in uninterrupted]
    assert rundir.read_run_json(run_dir)["status"] == "completed"
    first, second = run_files(run_dir)  # the resumed run continues the same W&B run id
    assert first.name == second.name == "run-interrupted-13k-s0-train.wandb"
    assert recorded_exit_code(first) == 1 and recorded_exit_code(second) == 0  # failed, then finished
    steps = logged_steps(run_dir)  # one run id, each file's steps in order
    assert steps["train/loss"] == list(range(1, 41))  # each step once, none again after the resume
    assert steps["val/loss"] == DEBUG_STEPS


def test_callbacks_none_trains_without_writing_checkpoints(compose_debug):
    run_dir = run_training(compose_debug("callbacks=none"))
    assert rundir.read_run_json(run_dir)["status"] == "completed"
    assert rundir.read_manifest(run_dir) == [] and not list(run_dir.glob("step_*"))


def test_tokens_per_step_is_the_global_batch_of_one_optimizer_step(compose_train):
    cfg = compose_train("data.batch_size=8", "model.n_ctx=32", "trainer.devices=2", "trainer.accumulate_grad_batches=3")
    assert tokens_per_step(cfg) == 8 * 32 * 2 * 3


def test_changed_config_on_an_existing_run_is_refused(compose_debug):
    run_training(compose_debug())
    with pytest.raises(ConfigError, match=r"different config \(optim.optimizer.lr: 0.001 -> 0.002\)"):
        run_training(compose_debug("optim.optimizer.lr=0.002"))


def test_wandb_offline_file_holds_the_logged_metrics(compose_debug):
    run_dir = run_training(compose_debug("logger=wandb"))
    [run_file] = run_files(run_dir)
    rows = history(run_file)
    # one step axis: W&B's own _step is train/step, the optimizer step, and it only grows
    assert all(r["_step"] == r["train/step"] for r in rows)
    assert [r["_step"] for r in rows] == sorted({r["_step"] for r in rows})  # one row per step, in order
    val = {r["train/step"]: r["val/loss"] for r in rows if "val/loss" in r}
    assert val == {r["step"]: pytest.approx(r["val_loss"]) for r in rundir.read_manifest(run_dir)}
    per_task = {r["train/step"]: r["val/loss/modular_addition"] for r in rows if "val/loss" in r}
    assert per_task == {r["step"]: pytest.approx(r["val_loss_by_task"]["modular_addition"])
                        for r in rundir.read_manifest(run_dir)}
    train = [r for r in rows if "train/loss" in r]
    # every 10 of 40 steps, at the step whose weights the manifest lists with that loss
    assert [r["train/step"] for r in train] == [10, 20, 30, 40]
    train_loss = {r["step"]: r["train_loss"] for r in rundir.read_manifest(run_dir)}
    assert {r["train/step"]: r["train/loss"] for r in train} == pytest.approx({s: train_loss[s] for s in (10, 20, 30, 40)})
    assert all({"train/lr", "train/tokens"} <= r.keys() for r in train)
    assert [r["train/tokens"] for r in train] == [10 * 8 * 32, 20 * 8 * 32, 30 * 8 * 32, 40 * 8 * 32]
    # throughput over the interval since the previous log: from the second logged step on
    assert "train/tokens_per_s" not in train[0] and all(r["train/tokens_per_s"] > 0 for r in train[1:])
    assert not any("train/mfu" in r for r in train)  # MFU is logged on GPUs only
    assert "offline-run" in str(run_file) and "default-13k-s0-train" in run_file.name
    assert recorded_exit_code(run_file) == 0  # finished


def test_without_a_progress_bar_training_prints_progress_lines(compose_debug, monkeypatch, capsys):
    monkeypatch.setattr("train.progress.EVERY_S", 0.0)  # a line after every step
    run_training(compose_debug("trainer.enable_progress_bar=false"))
    lines = [line for line in capsys.readouterr().out.splitlines() if "steps/s" in line]
    assert len(lines) == 40
    assert re.fullmatch(r"13k-s0: 40/40 steps \(100%\), [\d.]+ steps/s, ETA 0s, loss \d\.\d{4}", lines[-1]), lines[-1]


def test_csv_logger(compose_debug):
    run_dir = run_training(compose_debug("logger=csv"))
    metrics = pd.read_csv(run_dir / "csv" / "metrics.csv")
    manifest = rundir.read_manifest(run_dir)
    val = metrics.dropna(subset=["val/loss"])  # one row per checkpoint: the manifest's held-out loss
    assert list(val["step"]) == DEBUG_STEPS
    assert list(val["val/loss"]) == pytest.approx([r["val_loss"] for r in manifest])
    assert list(val["val/loss/modular_addition"]) == pytest.approx([r["val_loss_by_task"]["modular_addition"]
                                                                    for r in manifest])
    train = metrics.dropna(subset=["train/loss"])  # every 10 steps, as in the W&B file
    assert list(train["step"]) == [10, 20, 30, 40]
    assert list(train["train/tokens"]) == [10 * 8 * 32, 20 * 8 * 32, 30 * 8 * 32, 40 * 8 * 32]
    assert train["train/lr"].iloc[-1] == pytest.approx(0.1 * 0.001)  # the cosine's floor at the last step
    by_step = {r["step"]: r["train_loss"] for r in manifest}  # the loss of the batch before each checkpoint
    assert train["train/loss"].iloc[-1] == pytest.approx(by_step[40], rel=1e-6)


def test_log_every_n_steps_0_logs_no_training_rows(compose_debug):
    run_dir = run_training(compose_debug("logger=csv", "trainer.log_every_n_steps=0"))  # as in Lightning
    metrics = pd.read_csv(run_dir / "csv" / "metrics.csv")
    assert not any(name.startswith("train/") for name in metrics.columns) and metrics["val/loss"].notna().all()
    assert list(metrics["step"]) == DEBUG_STEPS == [row["step"] for row in rundir.read_manifest(run_dir)]


@pytest.mark.parametrize("override,message", [
    ("data.seq_len=65", "data.seq_len=65 is longer than the model context model.n_ctx=64"),
    ("trainer.max_steps=0", "trainer.max_steps=0 must be a positive integer"),
    ("data.batch_size=-4", "data.batch_size=-4 must be a positive integer"),
    ("schedule.extra=[5000]", "schedule.extra steps [5000] lie outside"),
    ("data.tasks.modular_addition.p=1", "data.tasks.modular_addition: modular_addition: p must be >= 2"),
    ("model.d_model=100 model.n_head=3", "model: d_model=100 is not divisible by n_head=3"),
    ("model.init_std=0", "model: init_std=0 must be positive"),
    ("model.positions=rotary", "model: positions='rotary' is not one of 'residual', 'qk'"),
    ("data.loss_on=answers", "data.loss_on=answers is not one of all, answer"),
    ("data=text data.loss_on=answer", "data.loss_on=answer needs task data with answers"),
])
def test_bad_config_is_a_clear_error(compose_train, override, message):
    with pytest.raises(ConfigError, match=message.replace("[", r"\[").replace("]", r"\]")):
        run_training(compose_train(*override.split()))


def test_unwritable_checkpoints_dir_is_a_clear_error(compose_train, tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    with pytest.raises(ConfigError, match="is not writable"):
        run_training(compose_train(f"checkpoints_dir={blocker}/runs"))


def run_cli(*args, cwd=REPO):
    return subprocess.run([sys.executable, "-m", "train", *args], cwd=cwd, capture_output=True, text=True, timeout=300)


def test_cli_errors_are_one_line_before_any_work(tmp_path):
    result = run_cli(f"checkpoints_dir={tmp_path}", "data.seq_len=100")
    assert result.returncode == 2
    assert result.stderr.strip() == ("error: data.seq_len=100 is longer than the model context model.n_ctx=64; "
                                     "lower data.seq_len or raise model.n_ctx")
    assert not any(tmp_path.iterdir())  # Hydra created no run directory
    result = run_cli(f"checkpoints_dir={tmp_path}", "model=7b")
    assert result.returncode == 1
    assert "Could not find 'model/7b'" in result.stderr and "13k" in result.stderr  # Hydra lists the sizes


def test_multirun_writes_one_run_dir_per_job(tmp_path):
    result = run_cli("-m", f"checkpoints_dir={tmp_path}", "seed=0,1", "experiment_name=sweep", "debug=default")
    assert result.returncode == 0, result.stderr[-2000:]
    runs = sorted(p.name for p in (tmp_path / "sweep").iterdir() if (p / "run.json").exists())
    assert runs == ["13k-s0", "13k-s1"]
    for name in runs:
        info = json.loads((tmp_path / "sweep" / name / "run.json").read_text())
        assert info["status"] == "completed" and info["seed"] == int(name[-1])
        assert [r["step"] for r in rundir.read_manifest(tmp_path / "sweep" / name)] == DEBUG_STEPS
    # two seeds: two different models
    finals = [rundir.read_manifest(tmp_path / "sweep" / name)[-1]["sha256"] for name in runs]
    assert finals[0] != finals[1]


@pytest.mark.slow
def test_compiled_training_writes_the_same_checkpoints(compose_debug):
    """compile=true (torch.compile, a minute of compiling on CPU) trains the same model:
    the same parameter names in every checkpoint, weights equal to rounding."""
    plain = run_training(compose_debug("experiment_name=plain"))
    compiled = run_training(compose_debug("experiment_name=compiled", "compile=true"))
    a, b = rundir.load_model(plain, 40), rundir.load_model(compiled, 40)
    assert a.state_dict().keys() == b.state_dict().keys()
    for name, weight in a.state_dict().items():
        assert torch.allclose(weight, b.state_dict()[name], atol=1e-4), name


def test_mfu_is_the_logged_throughput_times_palm_flops_per_token_over_the_peak(compose_debug, monkeypatch):
    # the GPU path on this CPU: as if it were a GPU whose bf16 peak is 1 GFLOP/s
    monkeypatch.setattr("train.module.peak_flops", lambda device: 1e9)
    run_dir = run_training(compose_debug("logger=csv"))
    metrics = pd.read_csv(run_dir / "csv" / "metrics.csv")
    logged = metrics.dropna(subset=["train/tokens_per_s"])
    assert list(logged["step"]) == [20, 30, 40] and logged["train/mfu"].notna().all()
    flops_per_token = rundir.load_model(run_dir, 40).palm_flops_per_token()
    expected = logged["train/tokens_per_s"] * flops_per_token / 1e9
    assert (logged["train/mfu"] - expected).abs().max() < 1e-9 * expected.max()


def test_mfu_peak_is_looked_up_by_gpu_name(monkeypatch):
    from train.module import peak_flops

    assert peak_flops(torch.device("cpu")) is None  # no MFU on CPU
    for name, peak in [("NVIDIA H100 80GB HBM3", 989e12), ("NVIDIA H100 PCIe", 756e12),
                       ("NVIDIA A100-SXM4-40GB", 312e12), ("Tesla T4", None)]:
        monkeypatch.setattr(torch.cuda, "get_device_name", lambda device=None, name=name: name)
        assert peak_flops(torch.device("cuda")) == peak, name
