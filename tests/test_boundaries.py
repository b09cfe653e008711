"""Import boundaries, each checked in a fresh interpreter (in this one, other tests have loaded
everything): the observatory never loads the training machinery, and the training config checks
load no tensor or dataset library."""

import json
import subprocess
import sys

from conftest import REPO

TRAINING = ["lightning", "lightning_fabric", "pytorch_lightning", "train.module", "datasets"]
HEAVY = ["torch", "datasets"]


def loaded_by(statement: str, packages: list[str]) -> list[str]:
    """Which of `packages` (or any of their submodules) are in sys.modules after `statement`."""
    code = (f"import json, sys\n{statement}\n"
            f"print(json.dumps(sorted(p for p in {packages!r} if any(m == p or m.startswith(p + '.') for m in sys.modules))))")
    result = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    return json.loads(result.stdout.splitlines()[-1])


def test_the_check_sees_what_an_import_loads():
    assert {"lightning", "datasets", "train.module"} <= set(loaded_by("import lightning, datasets, train.module",
                                                                      TRAINING))
    assert loaded_by("import torch", HEAVY) == ["torch"]
    assert loaded_by("import json", TRAINING + HEAVY) == []


def test_the_observatory_loads_no_training_machinery():
    statement = "import observatory, observatory.sweep, observatory.report, observatory.emergence, observatory.probes"
    assert loaded_by(statement, TRAINING) == []


def test_the_training_config_checks_load_no_torch_and_no_datasets():
    assert loaded_by("import train.config", HEAVY) == []
