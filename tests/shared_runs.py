"""``experiments run`` matrices that several test modules check, each run once per session.

Starting the replicated baselines' clusters is the slow part of a small matrix (RabbitMQ
alone takes 20-60 s here), and one ``experiments run`` starts each backend's cluster once
for all its cells. So the user's-function matrix of ``test_experiments_sinks`` (every
backend under ``slow-consumer``, the user's function on the user's payloads) also runs
``leader-crash``, which ``test_replicated_scenarios`` checks on the replicated backends:
one cluster start per backend instead of two, and each module's assertions unchanged.
"""
from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

SMALL = ["--quick", "--jobs", "24", "--load-s", "2", "--fault-start-s", "0.6", "--drain-s", "60"]
USER_MODULE = """
import hashlib, json, os

def fn(payload, ctx):
    with open(os.environ["USER_FN_LOG"], "a") as f:
        f.write(json.dumps({"payload": payload.decode(), "backend": ctx.backend, "job": ctx.job_id}) + "\\n")
    return hashlib.sha256(payload).hexdigest().encode()
"""
PAYLOADS = tuple(f"invoice {i}" for i in range(7))
# The function runs inside the worker harness, which is the same for every backend and every
# scenario: every backend under one scenario, and every scenario on one backend, cover it.
EVERY_BACKEND_UNDER, EVERY_SCENARIO_ON = "slow-consumer", "redis-streams"
OTHER_SCENARIOS = ("consumer-crash", "consumer-partition")
ALSO_UNDER_EVERY_BACKEND = "leader-crash"  # for test_replicated_scenarios (n/a on a single node)


@dataclass
class Matrix:
    """Where the runs wrote (``out``), each run's finished process, the function's call log."""

    out: Path
    runs: list[subprocess.CompletedProcess]
    calls: Path


def user_function_matrix(root: Path) -> Matrix:
    """Two ``experiments run`` into ``root/out`` with ``--func mymod:fn`` on :data:`PAYLOADS`: every backend
    under ``slow-consumer`` and ``leader-crash``, then ``redis-streams`` under the other scenarios."""
    (root / "mymod.py").write_text(USER_MODULE)
    (root / "payloads.txt").write_text("\n".join(PAYLOADS) + "\n")
    calls = root / "calls.jsonl"
    env = {**os.environ, "USER_FN_LOG": str(calls),
           "PYTHONPATH": os.pathsep.join(filter(None, [str(root), os.environ.get("PYTHONPATH")]))}
    out = root / "out"
    runs = []
    for backends, scenarios in (("all", f"{EVERY_BACKEND_UNDER},{ALSO_UNDER_EVERY_BACKEND}"),
                                (EVERY_SCENARIO_ON, ",".join(OTHER_SCENARIOS))):
        runs.append(subprocess.run(
            [sys.executable, "-m", "experiments", "run", "--func", "mymod:fn", "--payloads", str(root / "payloads.txt"),
             "--scenarios", scenarios, "--backends", backends, "--out", str(out), *SMALL],
            capture_output=True, text=True, timeout=1700, env=env, cwd=root))
    return Matrix(out, runs, calls)
