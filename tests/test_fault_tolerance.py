"""Kills, preemption, numerical faults, planted pickles and a full disk: every finished
checkpoint survives, nothing partial is listed, and a re-run finishes the same weights."""

import hashlib
import os
import pickle
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from conftest import REPO
from wandb_offline import logged_steps, recorded_exit_code, run_files

from train import rundir

STEPS = ["trainer.max_steps=120"]  # debug=default otherwise: checkpoints every 10 steps, resume state every 5
WANDB = ["logger=wandb", "trainer.log_every_n_steps=1"]  # a W&B row every step: a repeated one would show


def train_cmd(root: Path, *overrides: str, experiment: str = "run") -> list[str]:
    return [sys.executable, "-m", "train", f"checkpoints_dir={root}", f"experiment_name={experiment}", "debug=default",
            *STEPS, *overrides]


def run(cmd, **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=300, **kwargs)


def checkpoints(run_dir: Path) -> dict[int, str]:
    """step -> sha256 of each listed checkpoint, after checking that every listed file is whole."""
    rows = rundir.read_manifest(run_dir)
    assert len({r["step"] for r in rows}) == len(rows), "a step is listed twice"
    for r in rows:
        assert hashlib.sha256((run_dir / r["file"]).read_bytes()).hexdigest() == r["sha256"], f"partial {r['file']}"
    return {r["step"]: r["sha256"] for r in rows}


@pytest.fixture(scope="module")
def reference(tmp_path_factory) -> dict[int, str]:
    """The uninterrupted run every interrupted one must reproduce bit for bit."""
    root = tmp_path_factory.mktemp("reference")
    result = run(train_cmd(root))
    assert result.returncode == 0, result.stderr
    return checkpoints(root / "run" / "13k-s0")


@pytest.fixture(autouse=True, scope="module")
def ctrl_c_reaches_the_processes_started():
    """The Ctrl-C tests signal the processes they start (or those signal themselves), as a
    terminal signals its foreground job. A shell starts a background job (`pytest &` in a
    script) with SIGINT ignored, and a child inherits that: the signal would do nothing. With a
    handler here, a child starts with the default disposition instead, as a terminal's job does."""
    inherited = signal.getsignal(signal.SIGINT)
    if inherited == signal.SIG_IGN:
        signal.signal(signal.SIGINT, signal.default_int_handler)
    yield
    signal.signal(signal.SIGINT, inherited)


def wait_for_steps(run_dir: Path, n: int, proc: subprocess.Popen, timeout: float = 120) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline and proc.poll() is None:
        if (run_dir / rundir.MANIFEST).exists() and len(rundir.read_manifest(run_dir)) >= n:
            return
        time.sleep(0.01)
    raise AssertionError(f"{run_dir} did not reach {n} checkpoints (exit {proc.poll()})")


@pytest.mark.slow  # 26 s and more: the default suite keeps to 5 minutes (test_training.py resumes bitwise too)
@pytest.mark.parametrize("random_kills", [1, 4])
def test_sigkill_anywhere_then_rerun_gives_bitwise_identical_weights(reference, tmp_path, random_kills):
    run_dir, rng = tmp_path / "run" / "13k-s0", random.Random(0)
    # killed in the middle of writing: a weights file, the resume state, the manifest's neighbour
    for match in ("step_00000032", "last.ckpt", "step_00000070"):
        result = run([sys.executable, "tests/fault_injection.py", "KILL", match, *train_cmd(tmp_path)[3:]])
        assert result.returncode == -signal.SIGKILL
        listed = checkpoints(run_dir)
        assert all(listed[s] == reference[s] for s in listed)  # nothing partial, nothing different
    # killed at random moments
    for _ in range(random_kills):
        proc = subprocess.Popen(train_cmd(tmp_path), cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_for_steps(run_dir, 1, proc)
        time.sleep(rng.uniform(0.0, 1.5))
        proc.kill()
        proc.wait()
        listed = checkpoints(run_dir)
        assert all(listed[s] == reference[s] for s in listed)
    result = run(train_cmd(tmp_path))
    assert result.returncode == 0, result.stderr
    assert checkpoints(run_dir) == reference
    assert rundir.read_run_json(run_dir)["status"] == "completed"
    assert not list(run_dir.glob("**/.*.tmp-*"))  # temp files of interrupted writes are cleaned up


@pytest.mark.parametrize("signum", [signal.SIGTERM, pytest.param(signal.SIGUSR1, marks=pytest.mark.slow)])  # the same path
def test_preemption_signal_saves_resume_state_and_exits_cleanly(reference, tmp_path, signum):
    run_dir = tmp_path / "run" / "13k-s0"
    proc = subprocess.Popen(train_cmd(tmp_path, *WANDB), cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)
    wait_for_steps(run_dir, 6, proc)
    sent = time.time()
    proc.send_signal(signum)
    _, err = proc.communicate(timeout=30)
    assert time.time() - sent < 10  # well within a scheduler's grace period
    assert proc.returncode == 128 + signum, err
    assert "Traceback" not in err
    status = rundir.read_run_json(run_dir)["status"]
    step = rundir.load_resume_state(run_dir / rundir.RESUME_STATE)["global_step"]
    assert status.startswith(f"preempted at step {step} ({signal.Signals(signum).name})") and 0 < step < 120
    assert checkpoints(run_dir).items() <= reference.items()
    result = run(train_cmd(tmp_path, *WANDB))
    assert result.returncode == 0 and "resuming from" in result.stdout
    assert checkpoints(run_dir) == reference
    assert_one_wandb_run_logged_once(run_dir, stopped_with=128 + signum)


@pytest.mark.slow  # 18 s; the SIGTERM test in the default run takes the same save-and-stop path
def test_ctrl_c_says_the_same_command_resumes_and_marks_the_wandb_run_failed(reference, tmp_path):
    """Ctrl-C at the worst moment: inside step 10, after its checkpoint and resume state and
    before its training row. The step completes (its row too) and the run stops before step 11."""
    run_dir = tmp_path / "run" / "13k-s0"
    stopped = run([sys.executable, "tests/fault_injection.py", "INT", "10", *train_cmd(tmp_path, *WANDB)[3:]])
    assert stopped.returncode == 130, stopped.stderr
    assert "13k-s0: interrupted at step 10; run the same command to resume" in stopped.stderr
    assert "Traceback" not in stopped.stderr
    result = run(train_cmd(tmp_path, *WANDB))
    assert result.returncode == 0 and "resuming from" in result.stdout, result.stderr
    assert checkpoints(run_dir) == reference
    assert_one_wandb_run_logged_once(run_dir, stopped_with=130)
    # the console: none of W&B's banners, nor Lightning's notes on accelerators and tips
    printed = (result.stdout + result.stderr).splitlines()
    assert not [line for line in printed if line.startswith("wandb:") or "GPU available" in line or "Tip:" in line]


def assert_one_wandb_run_logged_once(run_dir: Path, stopped_with: int) -> None:
    """The stopped process's W&B file records its exit code (failed, not finished), the resumed
    one's 0; one run id, and no key logged twice at one step, though the resumed run trains
    again from the last resume state (a training row every step)."""
    stopped, resumed = run_files(run_dir)
    assert (recorded_exit_code(stopped), recorded_exit_code(resumed)) == (stopped_with, 0)
    steps = logged_steps(run_dir)
    assert steps["train/loss"] == list(range(1, 121))
    assert steps["val/loss"] == [r["step"] for r in rundir.read_manifest(run_dir)]


@pytest.mark.slow  # the SIGTERM variant above, in the default run, takes the same save-and-stop path
def test_submitit_requeues_a_preempted_job_which_resumes(reference, tmp_path):
    """submitit's own preemption signal (USR2) sent to the job's process: the job saves its
    state at the end of the step, submitit requeues it, and the requeued job resumes."""
    run_dir = tmp_path / "run" / "13k-s0"
    cmd = train_cmd(tmp_path)
    proc = subprocess.Popen([*cmd[:3], "-m", "hydra/launcher=submitit_local", *cmd[3:]], cwd=REPO,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    wait_for_steps(run_dir, 6, proc)
    job = next(int(p.name) for p in Path("/proc").iterdir() if p.name.isdigit() and
               b"submitit.core._submit" in _read(p / "cmdline") and str(tmp_path).encode() in _read(p / "cmdline"))
    os.kill(job, signal.SIGUSR2)
    out, err = proc.communicate(timeout=240)
    assert proc.returncode == 0, err
    logs = "".join(p.read_text() for p in (tmp_path / "run" / ".submitit").glob("*/*_log.*"))
    assert "Requeued job" in logs and "resuming from" in logs
    assert rundir.read_run_json(run_dir)["status"] == "completed"
    assert checkpoints(run_dir) == reference


def _read(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except OSError:
        return b""


def test_non_finite_loss_stops_the_run_keeping_earlier_checkpoints(tmp_path):
    # a learning rate this large overflows the weights within a few steps
    result = run(train_cmd(tmp_path, "optim.optimizer.lr=1e30", "optim.warmup_steps=0", "trainer.gradient_clip_val=null"))
    run_dir = tmp_path / "run" / "13k-s0"
    status = rundir.read_run_json(run_dir)["status"]
    assert result.returncode == 1 and status.startswith("failed: non-finite loss at step ")
    assert f"error: {status.removeprefix('failed: ')}" in result.stderr and "Traceback" not in result.stderr
    step = int(status.rsplit(" ", 1)[1])
    listed = checkpoints(run_dir)
    # every checkpoint up to the step whose loss was non-finite is kept; no update was made from it
    assert listed and max(listed) <= step and rundir.load_resume_state(run_dir / rundir.RESUME_STATE)["global_step"] <= step
    for s in listed:
        model = rundir.load_model(run_dir, s)
        assert all(torch.isfinite(p).all() for p in model.parameters())


class _Planted:
    """Unpickling this creates a file: proof that a loader ran arbitrary code."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return open, (str(self.marker), "w")


def test_a_malicious_pickle_is_never_executed(tmp_path, train_debug):
    marker = tmp_path / "pwned"
    payload = tmp_path / "payload.ckpt"
    torch.save(_Planted(marker), payload)
    pickle.loads(pickle.dumps(_Planted(marker)))  # control: unpickling it does create the file
    assert marker.exists()
    marker.unlink()

    run_dir = train_debug(tmp_path, "experiment_name=run", *STEPS, "trainer.max_steps=20")  # as train_cmd's run
    # planted as resume state: the run stops with a clear error instead of loading it
    (run_dir / rundir.RESUME_STATE).write_bytes(payload.read_bytes())
    rundir.update_status(run_dir, "running")
    result = run(train_cmd(tmp_path, "trainer.max_steps=20"))
    assert result.returncode != 0 and "not a resume state this project wrote" in result.stderr
    # planted as a weights file, with a manifest row that vouches for it
    with pytest.raises(rundir.CheckpointError, match="safetensors|not an observatory weights file"):
        rundir.load_weights_file(payload, hashlib.sha256(payload.read_bytes()).hexdigest())
    assert not marker.exists()


@pytest.mark.slow  # 15 s; keeps the default suite within its 5 minutes
def test_full_disk_during_a_checkpoint_write_fails_cleanly(reference, tmp_path):
    run_dir = tmp_path / "run" / "13k-s0"
    result = run([sys.executable, "tests/fault_injection.py", "ENOSPC", "step_00000040", *train_cmd(tmp_path)[3:]])
    assert result.returncode == 1
    status = rundir.read_run_json(run_dir)["status"]
    assert status.startswith("failed: OSError: [Errno 28] No space left on device"), status
    assert checkpoints(run_dir) == {s: h for s, h in reference.items() if s < 40}  # earlier ones intact
    assert not list(run_dir.glob("**/.*.tmp-*"))  # the half-written temp file is gone
    assert rundir.load_resume_state(run_dir / rundir.RESUME_STATE)["global_step"] == 35
    result = run(train_cmd(tmp_path))  # space freed: the same command finishes the run
    assert result.returncode == 0 and checkpoints(run_dir) == reference


@pytest.mark.slow
def test_ctrl_c_in_the_pipeline_lets_training_stop_cleanly_and_says_the_same_command_resumes(tmp_path):
    cmd = [sys.executable, "-m", "observatory.pipeline", f"checkpoints_dir={tmp_path}", "debug=default", "model=13k",
           "trainer.max_steps=100000", "logger=wandb"]
    proc = subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)  # its own process group, as a terminal's foreground job
    run_dir = tmp_path / "quickstart" / "13k-s0"
    wait_for_steps(run_dir, 6, proc)
    os.killpg(proc.pid, signal.SIGINT)  # Ctrl-C: the terminal signals the whole group
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    assert "interrupted: run the same command to resume" in err and "Traceback" not in err
    [run_file] = run_files(run_dir)
    assert recorded_exit_code(run_file) == 130  # training finished its W&B run: it was not killed
