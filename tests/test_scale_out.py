"""Data parallel on CPU (2 gloo processes), Hydra launchers, and sweeps with failing jobs."""

import subprocess
import sys
from pathlib import Path

import joblib
import pytest
from conftest import REPO
from hydra import compose, initialize_config_module
from hydra.core.global_hydra import GlobalHydra
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode

from train import rundir
from train.multirun import cores_per_job

SHORT = ["debug=default", "trainer.max_steps=20"]  # every test sets its own data.batch_size
STEPS = [0, 1, 2, 4, 8, 10, 16, 20]  # its checkpoints


def train(root: Path, *overrides: str, multirun: bool = False) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "train", *(["-m"] if multirun else []), f"checkpoints_dir={root}",
           "experiment_name=exp", *SHORT, *overrides]
    return subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=600)


@pytest.mark.slow  # 20 s: two gloo processes; keeps the default suite within its 5 minutes
def test_ddp_cpu_writes_what_one_process_writes_for_the_same_global_batch(tmp_path):
    one = train(tmp_path / "one", "data.batch_size=8")
    two = train(tmp_path / "ddp", "trainer=ddp_cpu", "data.batch_size=4")  # 2 processes × 4
    assert one.returncode == 0 and two.returncode == 0, two.stderr
    a, b = tmp_path / "one" / "exp" / "13k-s0", tmp_path / "ddp" / "exp" / "13k-s0"
    rows_a, rows_b = rundir.read_manifest(a), rundir.read_manifest(b)
    assert [(r["step"], r["tokens"]) for r in rows_a] == [(r["step"], r["tokens"]) for r in rows_b]  # written once
    assert [r["step"] for r in rows_a] == STEPS
    assert rows_a[0]["train_loss"] is None and rows_b[0]["train_loss"] is None  # no batch before step 0
    for ra, rb in zip(rows_a, rows_b):
        assert abs(ra["val_loss"] - rb["val_loss"]) < 1e-4
        if ra["step"] > 0:
            assert abs(ra["train_loss"] - rb["train_loss"]) < 1e-4  # of the global batch
        wa, wb = rundir.load_model(a, ra["step"]).state_dict(), rundir.load_model(b, rb["step"]).state_dict()
        assert all((wa[k] - wb[k]).abs().max() < 1e-4 for k in wa), f"step {ra['step']}"
    assert rundir.read_run_json(b)["tokens_per_step"] == rundir.read_run_json(a)["tokens_per_step"]


@pytest.mark.parametrize("overrides,mode,share", [
    (["hydra/launcher=parallel"], RunMode.MULTIRUN, max(1, joblib.cpu_count() // 2)),  # n_jobs: 2
    (["hydra/launcher=parallel", "hydra.launcher.n_jobs=-1"], RunMode.MULTIRUN, 1),  # a job per core
    (["hydra/launcher=parallel"], RunMode.RUN, None),  # a single run has the machine to itself
    (["hydra/launcher=basic"], RunMode.MULTIRUN, None),  # one job at a time
])
def test_jobs_run_in_parallel_take_their_share_of_the_cores(overrides, mode, share):
    GlobalHydra.instance().clear()
    with initialize_config_module(config_module="conf", version_base="1.3"):
        cfg = compose(config_name="train", overrides=overrides, return_hydra_config=True)
    cfg.hydra.mode = mode
    HydraConfig.instance().set_config(cfg)  # what the launcher sets in each job
    try:
        assert cores_per_job() == share
    finally:
        HydraConfig.instance().cfg = None


@pytest.mark.slow  # DDP and multirun each have a default test; this is their combination
def test_ddp_cpu_under_multirun_makes_no_duplicate_sweep_dirs(tmp_path):
    result = train(tmp_path, "trainer=ddp_cpu", "data.batch_size=4", "seed=0,1", multirun=True)
    assert result.returncode == 0, result.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["exp"]
    assert sorted(p.name for p in (tmp_path / "exp").iterdir()) == [".training.lock", "13k-s0", "13k-s1", "multirun.yaml"]
    for run in ("13k-s0", "13k-s1"):
        assert rundir.read_run_json(tmp_path / "exp" / run)["status"] == "completed"
        assert [r["step"] for r in rundir.read_manifest(tmp_path / "exp" / run)] == STEPS  # each written once


@pytest.mark.slow  # with the requeue test (test_fault_tolerance.py), the slow suite covers submitit; laptops do not use it
def test_submitit_local_sweep_runs_both_jobs(tmp_path):
    result = train(tmp_path, "hydra/launcher=submitit_local", "data.batch_size=8", "seed=0,1", multirun=True)
    assert result.returncode == 0, result.stderr
    for run in ("13k-s0", "13k-s1"):
        assert rundir.read_run_json(tmp_path / "exp" / run)["status"] == "completed"
        assert [r["step"] for r in rundir.read_manifest(tmp_path / "exp" / run)] == STEPS


@pytest.mark.slow  # 15 s (basic) and more (joblib): keeps the default suite within its 5 minutes
@pytest.mark.parametrize("launcher", ["basic", "parallel"])
def test_a_failing_job_does_not_stop_the_sweep_and_a_rerun_redoes_only_it(tmp_path, launcher, train_debug):
    args = [f"hydra/launcher={launcher}", "data.batch_size=8", "seed=0,1"]
    train_debug(tmp_path, "experiment_name=exp", *SHORT[1:], "data.batch_size=8", "seed=1")  # one run of the sweep, alone
    damaged = tmp_path / "exp" / "13k-s1"
    (damaged / rundir.RESUME_STATE).write_bytes(b"not a checkpoint")  # as if a disk error hit it
    rundir.update_status(damaged, "running")

    result = train(tmp_path, *args, multirun=True)
    assert result.returncode != 0
    assert rundir.read_run_json(tmp_path / "exp" / "13k-s0")["status"] == "completed"
    status = rundir.read_run_json(damaged)["status"]
    assert status.startswith("failed: CheckpointError") and "not a resume state" in status
    assert "1 run(s) of this sweep did not complete" in result.stderr and f"{damaged}: {status}" in result.stderr

    (damaged / rundir.RESUME_STATE).unlink()
    again = train(tmp_path, *args, multirun=True)
    assert again.returncode == 0, again.stderr
    assert "13k-s0: already completed" in again.stdout + again.stderr  # only the failed run is redone
    assert rundir.read_run_json(damaged)["status"] == "completed"
