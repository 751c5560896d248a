"""The layout's dependency rules (DESIGN.md "Layout"), checked on the tree itself."""
from __future__ import annotations

import json
import subprocess
import sys

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
