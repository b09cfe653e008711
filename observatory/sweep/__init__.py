"""Where checkpoints come from and how they are swept: run discovery (discovery.py), the
sweep of every checkpoint through the probes into the store (runner.py), and the adaptive
choice of which checkpoints to probe (adaptive.py)."""

from observatory.sweep.runner import (  # noqa: F401 (the package's API)
    RunInputs,
    Summary,
    SweepError,
    probe_checkpoint,
    sweep,
    sweep_from_config,
)
