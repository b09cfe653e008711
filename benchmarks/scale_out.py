"""Jobs side by side on one machine, measured in one run on the quickstart experiment (each
command in its own process, as a user runs it; W&B off; nothing else should be running):

1. training: the quickstart's three runs with hydra/launcher=parallel (2 jobs at a time, each
   job's share of the cores growing as the others finish) against hydra/launcher=basic (one
   after another);
2. shards: `python -m observatory -m shard=0,1 shards=2 hydra/launcher=parallel` (one thread
   each) against one process (every core), on the 60 checkpoints trained in 1, report included;
3. follow: the 13k run trained again with `python -m observatory follow=true` beside it: the
   delay from each checkpoint's manifest row to its rows in the store (median, maximum);
4. overlap: `python -m observatory.pipeline overlap=true` against the two stages one after
   the other (training with the basic launcher in 1 plus the one-process observatory in 2).

    python -m benchmarks.scale_out [--skip overlap ...]
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd

from train import rundir

QUIET = ["wandb.mode=disabled", "progress=false"]


def timed(*args: str) -> float:
    """Seconds a `python -m <args>` command takes; it must succeed."""
    started = time.perf_counter()
    result = subprocess.run([sys.executable, "-m", *args], capture_output=True, text=True)
    if result.returncode != 0:
        raise SystemExit(f"{' '.join(args)} failed:\n{result.stderr[-3000:]}")
    return time.perf_counter() - started


def training(root: Path, side_by_side: bool = True) -> float:
    basic = timed("train", "-m", "experiment=quickstart", f"checkpoints_dir={root / 'basic'}", "hydra/launcher=basic",
                  "logger=none")
    if not side_by_side:
        print(f"training, quickstart (3 runs): one after another {basic:.0f} s", flush=True)
        return basic
    parallel = timed("train", "-m", "experiment=quickstart", f"checkpoints_dir={root / 'parallel'}",
                     "hydra/launcher=parallel", "logger=none")
    print(f"training, quickstart (3 runs): one after another {basic:.0f} s, side by side (parallel launcher) "
          f"{parallel:.0f} s: ratio {parallel / basic:.2f}", flush=True)
    return basic


def shards(root: Path) -> float:
    experiment = [f"checkpoints_dir={root / 'basic'}", "experiment=quickstart", *QUIET]
    out = root / "basic" / "quickstart" / "observatory"
    one = timed("observatory", *experiment)
    reference = pd.read_parquet(out / "results.parquet")
    for part in ("checkpoints", "items", "results.parquet"):  # probe again from nothing
        subprocess.run(["rm", "-rf", str(out / part)], check=True)
    sharded = timed("observatory", "-m", *experiment, "shard=0,1", "shards=2", "hydra/launcher=parallel")
    print(f"observatory, quickstart (60 checkpoints, report included): one process {one:.0f} s, "
          f"2 shards side by side {sharded:.0f} s: ratio {sharded / one:.2f}", flush=True)
    shards = pd.read_parquet(out / "results.parquet")
    same_rows = shards.drop(columns="value").equals(reference.drop(columns="value"))
    print(f"  the same rows: {same_rows}; largest value difference (2 threads vs 1 per shard): "
          f"{(shards['value'] - reference['value']).abs().max():.2e}", flush=True)
    return one


def follow(root: Path) -> None:
    where = [f"checkpoints_dir={root / 'follow'}", "experiment=quickstart"]
    follower = subprocess.Popen([sys.executable, "-m", "observatory", *where, "follow=true", "poll_seconds=1",
                                 *QUIET], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    time.sleep(3)  # started before training, as a user would
    timed("train", *where, "model=13k", "logger=none")
    if follower.wait(timeout=600) != 0:
        raise SystemExit(f"the follower failed:\n{follower.stderr.read()[-3000:]}")
    run = root / "follow" / "quickstart" / "13k-s0"
    delays = []
    for row in rundir.read_manifest(run):
        stored = root / "follow" / "quickstart" / "observatory" / "checkpoints" / run.name / f"step_{row['step']:08d}.parquet"
        delays.append(stored.stat().st_mtime - row["wall_time"])
    print(f"follow (13k beside its training, {len(delays)} checkpoints): delay from manifest row to stored rows "
          f"median {statistics.median(delays):.1f} s, max {max(delays):.1f} s", flush=True)


def overlap(root: Path, sequential: float) -> None:
    overlapped = timed("observatory.pipeline", f"checkpoints_dir={root / 'overlap'}", "experiment=quickstart",
                       "overlap=true", "logger=none", *QUIET)
    print(f"pipeline, quickstart: the stages one after another {sequential:.0f} s (training + observatory above), "
          f"overlapped {overlapped:.0f} s: ratio {overlapped / sequential:.2f}", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--skip", nargs="*", default=[], choices=["side-by-side", "follow", "overlap"])
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        basic = training(root, "side-by-side" not in args.skip)
        one = shards(root)
        if "follow" not in args.skip:
            follow(root)
        if "overlap" not in args.skip:
            overlap(root, basic + one)


if __name__ == "__main__":
    main()
