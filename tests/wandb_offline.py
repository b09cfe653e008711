"""Read back offline W&B run files: the readers live in train/wandb_run.py (a resumed run reads
what its earlier processes logged); the tests import them from here."""

from train.wandb_run import history, recorded_exit_code, records, run_files  # noqa: F401


def logged_steps(run_dir) -> dict[str, list[int]]:
    """key -> the steps it was logged at, over every offline file of the one W&B run under
    run_dir, after checking that there is one run id and that each file's steps only grow."""
    files = run_files(run_dir)
    assert len({f.name for f in files}) == 1, f"more than one W&B run id: {[f.name for f in files]}"
    steps: dict[str, list[int]] = {}
    for f in files:
        rows = history(f)
        assert [r["_step"] for r in rows] == sorted(r["_step"] for r in rows), f"{f}: the step axis goes back"
        for row in rows:
            for key in row.keys() - {"_step", "_runtime", "_timestamp"}:
                steps.setdefault(key, []).append(row["_step"])
    return steps
