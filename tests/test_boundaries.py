"""Import boundaries, each checked in a fresh interpreter (in this one, other tests have loaded
everything): the observatory never loads the training machinery, and the training config checks
load no tensor or dataset library."""

import ast
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
    assert loaded_by("import email.mime.text", ["email", "csv"]) == ["email"]  # a submodule counts for its package
    assert loaded_by("import json", TRAINING + HEAVY) == []


def test_the_observatory_loads_no_training_machinery():
    statement = "import observatory, observatory.sweep, observatory.report, observatory.analysis.emergence, observatory.probes"
    assert loaded_by(statement, TRAINING) == []


def test_the_training_config_checks_load_no_torch_and_no_datasets():
    assert loaded_by("import train.config", HEAVY) == []


def import_graph() -> dict[str, set[str]]:
    """{module: the project modules it imports} for train, observatory and conf, from their source."""
    packages = ("train", "observatory", "conf")
    files = {".".join(p.relative_to(REPO).with_suffix("").parts).removesuffix(".__init__"): p
             for package in packages for p in (REPO / package).rglob("*.py")}
    graph = {}
    for module, path in files.items():
        imported = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module:
                imported |= {node.module} | {f"{node.module}.{a.name}" for a in node.names}
            elif isinstance(node, ast.Import):
                imported |= {a.name for a in node.names}
        graph[module] = {m for m in imported if m in files and m != module}
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Every module that can reach itself, with the path it takes."""
    found = []
    for start in graph:
        seen, stack = set(), [(start, [start])]
        while stack:
            node, path = stack.pop()
            for nxt in graph[node]:
                if nxt == start:
                    found.append(path + [start])
                elif nxt not in seen:
                    seen.add(nxt)
                    stack.append((nxt, path + [nxt]))
    return found


def test_no_import_cycle_between_the_projects_modules():
    assert cycles({"a": {"b"}, "b": {"a"}, "c": set()}) == [["a", "b", "a"], ["b", "a", "b"]]  # the check finds one
    graph = import_graph()
    assert {"observatory.probes.registry", "train.model"} <= set(graph)
    assert cycles(graph) == []


# The observatory's parts by role, and what each may import: report -> analysis -> store <- sweep -> probes, hub,
# all of them -> metrics (what a number is). The entry points (python -m ...) may import anything.
LAYERS = {"observatory.metrics": set(), "observatory.store": {"observatory.metrics"},
          "observatory.probes": {"observatory.metrics"},
          "observatory.hub": set(),  # a checkpoint source: the hub's repositories as runs
          "observatory.analysis": {"observatory.store", "observatory.metrics"},
          "observatory.sweep": {"observatory.probes", "observatory.hub",
                                "observatory.store", "observatory.analysis", "observatory.metrics"},
          "observatory.report": {"observatory.analysis", "observatory.store", "observatory.metrics"}}
ENTRY_POINTS = {"observatory", "observatory.__main__", "observatory.pipeline", "observatory.calibrate",
                "observatory.publish"}  # publish: the end of every way of probing (sweep, shards, follower)


def layer_of(module: str) -> str | None:
    return next((layer for layer in LAYERS if module == layer or module.startswith(layer + ".")), None)


def crossings(graph: dict[str, set[str]]) -> list[tuple[str, str]]:
    """(module, import) pairs of the observatory that go against the layers' direction."""
    bad = []
    for module, imports in graph.items():
        mine = layer_of(module)
        if module.startswith("observatory") and mine is None and module not in ENTRY_POINTS:
            bad.append((module, "(a module outside every layer)"))
        for imported in imports:
            theirs = layer_of(imported)
            if mine and theirs and theirs != mine and theirs not in LAYERS[mine]:
                bad.append((module, imported))
    return bad


def test_the_observatory_imports_in_one_direction_report_analysis_store_sweep_probes():
    assert crossings({"observatory.store": {"observatory.report.page"}}) == [("observatory.store", "observatory.report.page")]
    graph = import_graph()
    assert {"observatory.report.page", "observatory.analysis.tables", "observatory.sweep.runner"} <= set(graph)
    assert crossings(graph) == []
