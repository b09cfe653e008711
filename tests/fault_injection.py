"""Run `python -m train` with a fault injected into the weights/resume writer: the write of
the file whose name contains MATCH stops halfway, then the process is SIGKILLed (KILL) or
the write fails as on a full disk (ENOSPC). INT: Ctrl-C (SIGINT to itself) just after the
resume state of step MATCH is saved, inside that step, before the step's training row is logged.

    python tests/fault_injection.py KILL|ENOSPC MATCH [train overrides]
    python tests/fault_injection.py INT STEP [train overrides]
"""

import builtins
import errno
import os
import runpy
import signal
import sys
from pathlib import Path

# run as a script, this file puts tests/ on sys.path, not the checkout: put the checkout first,
# so that its train package is the one run (not one an editable install points elsewhere)
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from train import checkpointing, durable  # noqa: E402

mode, match = sys.argv[1], sys.argv[2]


class HalfWrite:
    def __init__(self, f):
        self.f = f

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.f.close()

    def write(self, data):
        self.f.write(data[: len(data) // 2])
        self.f.flush()
        if mode == "KILL":
            os.kill(os.getpid(), signal.SIGKILL)
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    def __getattr__(self, name):
        return getattr(self.f, name)


def faulty_open(path, mode_="r", *args, **kwargs):
    f = builtins.open(path, mode_, *args, **kwargs)
    return HalfWrite(f) if match in str(path) and "w" in mode_ else f


save_resume_state = checkpointing.save_resume_state  # the real one, which the INT fault wraps


def save_resume_state_then_ctrl_c(trainer, run_dir):
    save_resume_state(trainer, run_dir)
    if trainer.global_step == int(match):
        os.kill(os.getpid(), signal.SIGINT)


if mode == "INT":
    checkpointing.save_resume_state = save_resume_state_then_ctrl_c  # looked up there at each call
else:
    durable.open = faulty_open  # the module's writes (atomic_write_bytes) look `open` up here first
sys.argv = ["train", *sys.argv[3:]]
runpy.run_module("train", run_name="__main__", alter_sys=True)
