"""The layout's dependency rules (DESIGN.md "Layout"), checked on the tree itself."""
from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

from baselines import registry

ROOT = Path(__file__).resolve().parent.parent

IMPORT_ALL_OF_LOGQUEUE = """
import importlib, json, pkgutil, sys
import logqueue
failed = {}
for info in pkgutil.walk_packages(logqueue.__path__, "logqueue."):
    if info.name.endswith("__main__"):
        continue  # a command's entry: importing it runs the command
    try:
        importlib.import_module(info.name)
    except ImportError as exc:  # an optional dependency (uvloop, ...) missing here
        failed[info.name] = str(exc)
leaked = sorted(m for m in sys.modules if m.split(".")[0] in ("baselines", "experiments"))
print(json.dumps({"leaked": leaked, "failed": failed, "imported": sorted(m for m in sys.modules if m.startswith("logqueue"))}))
"""


def test_importing_every_logqueue_module_imports_no_baselines_or_experiments():
    done = subprocess.run([sys.executable, "-c", IMPORT_ALL_OF_LOGQUEUE], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    assert report["leaked"] == [], f"logqueue imports the harness: {report['leaked']}"
    assert "logqueue.raft.core" in report["imported"] and "logqueue.runtime.node" in report["imported"]
    assert not report["failed"], report["failed"]


def _backend_name_uses(tree, names: set[str]) -> list[tuple[int, str]]:
    """Comparisons with a registered backend name, and tables keyed by two or more of them."""
    def named(node) -> bool:
        if isinstance(node, ast.Constant):
            return node.value in names
        if isinstance(node, (ast.Tuple, ast.List, ast.Set)):
            return any(named(e) for e in node.elts)
        return False

    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Compare) and any(named(side) for side in [node.left, *node.comparators]):
            found.append((node.lineno, "compares a backend's name"))
        elif isinstance(node, ast.Dict) and sum(named(k) for k in node.keys if k is not None) >= 2:
            found.append((node.lineno, "a table keyed by backend names"))
        elif isinstance(node, ast.Call) and getattr(node.func, "attr", None) in ("startswith", "endswith") \
                and any(named(a) for a in node.args):
            found.append((node.lineno, "matches a backend's name"))
    return found


def test_no_code_under_experiments_asks_a_backends_name():
    names = set(registry.names())
    offenders = []
    for path in sorted((ROOT / "experiments").rglob("*.py")):
        for line, what in _backend_name_uses(ast.parse(path.read_text(), str(path)), names):
            offenders.append(f"{path.relative_to(ROOT)}:{line}: {what}")
    assert offenders == []


def test_the_name_scan_finds_what_it_looks_for():
    names = {"logqueue", "redis-list"}
    source = 'if backend == "logqueue": pass\nok = b in ("redis-list", "x")\nT = {"logqueue": 1, "redis-list": 2}\n'
    assert [line for line, _ in _backend_name_uses(ast.parse(source), names)] == [1, 2, 3]
    assert _backend_name_uses(ast.parse('addresses = {"logqueue": spec}\nname = "logqueue"\n'), names) == []


def test_package_faces():
    import baselines
    import experiments

    from baselines import Backend, BackendConfig, get, names  # noqa: F401
    from experiments import Params, Scenario, check, load_runs, recheck  # noqa: F401

    assert get("stub").__mro__[1:].count(Backend) == 1 and "stub" in names()
    assert Scenario.__module__ == "experiments.scenarios.base" and callable(load_runs) and callable(check)
    for package in (baselines, experiments):
        assert package.__all__ and all(hasattr(package, n) for n in package.__all__), package.__name__


def test_a_worker_process_does_not_import_pandas_through_the_face():
    done = subprocess.run([sys.executable, "-c", "import sys, experiments.worker; print('pandas' in sys.modules)"],
                          capture_output=True, text=True, timeout=60)
    assert done.stdout.strip() == "False", done.stderr
