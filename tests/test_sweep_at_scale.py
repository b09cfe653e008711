"""The sweep split into shards, and the follower that probes checkpoints while training writes
them: both give the one-process sweep's results, row for row."""

import json
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

import pandas as pd
import pytest
from conftest import REPO, killed_after, unprobed_copy
from wandb_offline import history, run_files

from observatory import store
from observatory.report.wandb_log import LiveCurves
from observatory.sweep import SweepError, sweep
from observatory.sweep.follow import follow
from observatory.sweep.runner import consolidate
from observatory.sweep.shards import assign
from train import rundir
from train.multirun import CoreShare

PROBES = {"capability": {}, "loss": {}, "weights": {}}


@pytest.fixture(scope="module")
def trained(tmp_path_factory, train_debug):
    """Two tiny runs of different sizes' cost (seeds 0 and 1 of 13k), 8 checkpoints each."""
    root = tmp_path_factory.mktemp("trained")
    for seed in (0, 1):
        train_debug(root, "data=suite", "experiment_name=tiny", f"seed={seed}", "trainer.max_steps=20",
                    "data.probe_items=24")
    return root / "tiny"


@pytest.fixture(scope="module")
def reference(trained, tmp_path_factory):
    """The one-process sweep's results table."""
    return sweep(unprobed_copy(trained, tmp_path_factory.mktemp("reference")), PROBES, progress=False).table


@pytest.fixture
def experiment(trained, tmp_path):
    return unprobed_copy(trained, tmp_path)


def written_by(monkeypatch) -> list[tuple[str, int]]:
    """(run, step) of every checkpoint results file the sweeps of this process write."""
    written, write = [], store.write_checkpoint

    def recording(experiment_dir, ckpt, *args, **kwargs):
        written.append((ckpt.run, ckpt.step))
        return write(experiment_dir, ckpt, *args, **kwargs)

    monkeypatch.setattr(store, "write_checkpoint", recording)
    return written


# ---- shards ----------------------------------------------------------------------------------
def test_the_costliest_pairs_are_dealt_first_to_the_least_loaded_shard():
    costs = {("big", s): 10.0 for s in range(4)} | {("small", s): 1.0 for s in range(8)}
    owner = assign(costs, costs, 3)
    loads = [sum(c for pair, c in costs.items() if owner[pair] == shard) for shard in range(3)]
    # four big ones over three shards: one shard holds two (20, the least possible), the small ones go elsewhere
    assert sorted(loads) == [14.0, 14.0, 20.0]
    assert assign(costs, costs, 3) == owner  # every job computes the same deal


def test_shards_probe_disjoint_shares_and_consolidate_to_the_one_process_results(experiment, reference, monkeypatch):
    written = written_by(monkeypatch)
    summaries = [sweep(experiment, PROBES, progress=False, shard=i, shards=2) for i in range(2)]
    assert summaries[0].table is None and not (experiment / "observatory" / "results.parquet").exists()
    assert [s.probed for s in summaries] == [8, 8] and len(written) == len(set(written)) == 16  # no pair twice
    assert "shard 1 of 2: 2 runs, 16 checkpoints (8 of them this shard's)" in str(summaries[1])
    pd.testing.assert_frame_equal(consolidate(experiment), reference)
    again = sweep(experiment, PROBES, progress=False, shard=1, shards=2)  # a finished shard, re-run
    assert (again.probed, again.skipped) == (0, 8)


def test_a_shard_killed_mid_sweep_and_rerun_finishes_its_share_alone(experiment, reference, monkeypatch):
    cmd = [sys.executable, "-m", "observatory", f"checkpoints_dir={experiment.parent}", "experiment_name=tiny",
           "shard=0", "shards=2", "wandb.mode=disabled", "progress=false", "device=cpu",
           *(f"~probes.{p}" for p in ("attention", "linear", "ngram", "essential_dynamics"))]
    done = killed_after(cmd, experiment / "observatory" / "checkpoints", 2)
    assert 2 <= done < 8, f"kill landed after {done} checkpoints"
    written = written_by(monkeypatch)
    rerun = sweep(experiment, PROBES, progress=False, shard=0, shards=2)
    assert (rerun.skipped, rerun.probed) == (done, 8 - done)
    sweep(experiment, PROBES, progress=False, shard=1, shards=2)
    assert len(written) == len(set(written)) == 16 - done  # nothing the killed shard finished is redone
    pd.testing.assert_frame_equal(consolidate(experiment), reference)


def test_an_experiments_sweep_over_sizes_is_trainings_not_the_observatorys():
    from hydra import compose, initialize_config_module
    from hydra.core.global_hydra import GlobalHydra

    GlobalHydra.instance().clear()
    with initialize_config_module(config_module="conf", version_base="1.3"):
        train = compose(config_name="train", overrides=["experiment=quickstart"], return_hydra_config=True)
        observe = compose(config_name="observatory", overrides=["experiment=quickstart"], return_hydra_config=True)
    assert train.hydra.sweeper.params == {"model": "13k,100k,340k"}
    assert observe.hydra.sweeper.params is None and observe.experiment_name == "quickstart"  # -m: the shards alone


def test_bad_shard_settings_stop_before_any_work(experiment):
    with pytest.raises(SweepError, match=r"shard=2 shards=2: shard must be one of 0..shards-1"):
        sweep(experiment, PROBES, shard=2, shards=2)
    with pytest.raises(SweepError, match="adaptive cannot be split into shards"):
        sweep(experiment, PROBES, shards=2, adaptive=4)
    with store.shard_lock(experiment, 0):  # shard 0 running: a one-process sweep waits, shard 0 again stops
        with pytest.raises(SweepError, match="another sweep .* is writing"):
            sweep(experiment, PROBES, progress=False)
        with pytest.raises(SweepError, match="shard 0 .* is writing .*leave it to that job"):
            sweep(experiment, PROBES, progress=False, shards=2)
    assert not (experiment / "observatory" / "checkpoints").exists()


@pytest.mark.slow  # 40 s: two observatory processes through Hydra's joblib launcher, then the report
def test_a_sharded_multirun_ends_with_the_report(experiment, reference):
    cmd = [sys.executable, "-m", "observatory", "-m", f"checkpoints_dir={experiment.parent}", "experiment_name=tiny",
           "shard=0,1", "shards=2", "hydra/launcher=parallel", "wandb.mode=disabled", "progress=false",
           *(f"~probes.{p}" for p in ("attention", "linear", "ngram", "essential_dynamics"))]
    result = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr
    assert result.stdout.count("shard 0 of 2") == 1 and f"report: {experiment}/observatory/index.html" in result.stdout
    pd.testing.assert_frame_equal(pd.read_parquet(experiment / "observatory" / "results.parquet"), reference)


# ---- follow ----------------------------------------------------------------------------------
class Training(threading.Thread):
    """Writes the runs of `source` into `target` as training would, one checkpoint at a time:
    each weights file slowly (in pieces, not atomically), its manifest row only after it; run B
    only after run A has completed (the gap between the jobs of a sweep), the training lock held
    throughout, except for a while where the runs are killed (status still running) and resumed."""

    def __init__(self, source: Path, target: Path, last_status: str = "completed", kill: bool = True):
        super().__init__(daemon=True)
        self.source, self.target, self.last_status, self.kill = source, target, last_status, kill
        self.released: float | None = None  # time.monotonic() when training's lock went for good

    def ended_before(self, moment: float) -> bool:
        """Training had let its lock go for good by `moment` (the thread itself may still be
        returning: on a loaded machine is_alive() can lag the release)."""
        self.join(timeout=30)
        return self.released is not None and self.released <= moment

    def run(self) -> None:
        runs = sorted(p.parent for p in self.source.glob("*/run.json"))
        lock = rundir.hold_training_lock(self.target)
        for i, run in enumerate(runs):
            rows = rundir.read_manifest(run)
            out = self.target / run.name
            out.mkdir(parents=True)
            for name in ("tokenizer.json", "probe_items.jsonl"):
                shutil.copy(run / name, out / name)
            info = rundir.read_run_json(run)
            (out / "run.json").write_text(json.dumps(info | {"status": "running"}))
            for k, row in enumerate(rows):
                if self.kill and i == 0 and k == len(rows) // 2:  # killed: the lock goes, the status stays
                    lock.close()
                    time.sleep(0.5)
                    lock = rundir.hold_training_lock(self.target)  # resumed
                self.write_slowly(run / row["file"], out / row["file"])
                rundir.append_manifest(out, row)
                time.sleep(0.02)
            status = self.last_status if i == len(runs) - 1 else "completed"
            (out / "run.json").write_text(json.dumps(info | {"status": status}))
            time.sleep(0.3)  # the next job starting
        self.released = time.monotonic()
        lock.close()

    @staticmethod
    def write_slowly(source: Path, target: Path) -> None:
        data = source.read_bytes()
        with open(target, "wb") as f:
            for start in range(0, len(data), len(data) // 4 + 1):
                f.write(data[start : start + len(data) // 4 + 1])
                f.flush()
                time.sleep(0.01)


def test_the_follower_probes_each_checkpoint_once_it_is_listed_and_ends_with_training(trained, reference, tmp_path,
                                                                                       monkeypatch):
    target = tmp_path / "tiny"
    target.mkdir()
    training = Training(trained, target)
    loaded, load = [], rundir.load_weights_file

    def checked_load(path, sha256=None):
        listed = {row["file"] for row in rundir.read_manifest(path.parent)}
        assert path.name in listed, f"{path.name} read before its manifest row"
        loaded.append(path)
        return load(path, sha256)

    monkeypatch.setattr(rundir, "load_weights_file", checked_load)
    training.start()
    with LiveCurves("tiny", target / "observatory", "offline") as curves:
        summary = follow(target, PROBES, poll_seconds=0.02, log_rows=curves.log)
    assert training.ended_before(time.monotonic())  # it ended with training, not before (the gap, the kill)
    assert (summary.runs, summary.checkpoints, summary.probed, len(summary.problems)) == (2, 16, 16, 0)
    assert len(loaded) == len(set(loaded)) == 16  # each checkpoint read once, each after its row
    pd.testing.assert_frame_equal(summary.table, reference)
    for run in ("13k-s0", "13k-s1"):  # W&B: every checkpoint at its step, the step axis only growing
        [file] = [f for f in run_files(target / "observatory") if f.name == f"run-tiny-{run}-observatory.wandb"]
        steps = [row["train/step"] for row in history(file)]
        assert steps == sorted(set(steps)) == sorted(reference[reference["run"] == run]["step"].unique())


def test_the_follower_ends_when_a_run_fails_and_resumes_where_it_stopped(trained, reference, tmp_path):
    target = tmp_path / "tiny"
    target.mkdir()
    training = Training(trained, target, last_status="failed: NonFiniteLoss", kill=False)
    training.start()
    first = follow(target, PROBES, poll_seconds=0.02)
    assert training.ended_before(time.monotonic()) and first.probed == 16
    again = follow(target, PROBES, poll_seconds=0.02)  # the same command again: nothing new
    assert (again.probed, again.skipped) == (0, 16)
    pd.testing.assert_frame_equal(again.table, reference)


@pytest.mark.slow  # 40 s: real training, two jobs side by side, with the follower beside them
def test_the_follower_beside_a_parallel_training_sweep_probes_every_checkpoint(tmp_path):
    cmd = [sys.executable, "-m", "train", "-m", f"checkpoints_dir={tmp_path}", "experiment_name=live", "debug=default",
           "seed=0,1,2", "hydra/launcher=parallel", "logger=none"]
    training = subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    summary = follow(tmp_path / "live", PROBES, poll_seconds=0.2)  # started with training: no run yet
    assert training.wait(timeout=60) == 0, training.stderr.read()  # it ended when training did, not before
    manifests = [rundir.read_manifest(tmp_path / "live" / f"13k-s{seed}") for seed in range(3)]
    assert summary.runs == 3 and summary.probed == sum(map(len, manifests)) == 33 and not summary.problems
    assert set(zip(summary.table["run"], summary.table["step"])) == {
        (f"13k-s{seed}", row["step"]) for seed, rows in enumerate(manifests) for row in rows}


# ---- cores -----------------------------------------------------------------------------------
def test_a_jobs_share_of_the_cores_grows_when_its_neighbours_end(tmp_path):
    share = CoreShare(tmp_path / "jobs")
    try:
        assert share.jobs() == 1 and share.threads() == share.default_threads  # alone: torch's own count
        neighbour = subprocess.Popen([sys.executable, "-c", "import fcntl, sys, time; f = open(sys.argv[1], 'w'); "
                                      "fcntl.flock(f, fcntl.LOCK_EX); print(flush=True); time.sleep(60)",
                                      str(tmp_path / "jobs" / "999999")], stdout=subprocess.PIPE, text=True)
        neighbour.stdout.readline()  # it holds its lock
        assert share.jobs() == 2 and share.threads() == max(1, share.cores // 2)
        neighbour.kill()
        neighbour.wait()
        assert share.jobs() == 1 and share.update() == share.cores  # its file goes with it
        assert not (tmp_path / "jobs" / "999999").exists()
    finally:
        share.close()


def test_a_job_waiting_gives_its_share_of_the_cores_to_its_neighbours(tmp_path):
    """A follower between polls (CoreShare.idle) is not counted by the jobs beside it."""
    count = [sys.executable, "-c", "import sys; from train.multirun import CoreShare; "
             "print(CoreShare(__import__('pathlib').Path(sys.argv[1])).jobs())", str(tmp_path / "jobs")]
    share = CoreShare(tmp_path / "jobs")
    try:
        assert subprocess.run(count, capture_output=True, text=True, check=True).stdout.strip() == "2"
        with share.idle():
            assert subprocess.run(count, capture_output=True, text=True, check=True).stdout.strip() == "1"
        assert subprocess.run(count, capture_output=True, text=True, check=True).stdout.strip() == "2"
        assert share.jobs() == 1  # back in the registry; the counting jobs have ended
    finally:
        share.close()
