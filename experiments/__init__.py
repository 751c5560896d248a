"""The failure experiments: what a notebook or a plug-in scenario uses.

    from experiments import Scenario, Params, RunContext   # write a scenario
    from experiments import check, recheck, load_events    # check a recorded history
    from experiments import load_runs                      # a results directory as a DataFrame

Names are imported on first use, so a worker process (``python -m experiments.worker``)
does not pay for pandas or the scenario machinery.
"""
from __future__ import annotations

import importlib

_FACE = {
    "Scenario": "experiments.scenarios.base",
    "Params": "experiments.scenarios.base",
    "RunContext": "experiments.scenarios.base",
    "with_defaults": "experiments.scenarios.base",
    "check": "experiments.checker",
    "check_dir": "experiments.checker",
    "recheck": "experiments.checker",
    "load_events": "experiments.checker",
    "CheckerError": "experiments.checker",
    "EventLog": "experiments.recorder",
    "load_runs": "experiments.analysis",
}

__all__ = list(_FACE)


def __getattr__(name: str):
    if name not in _FACE:
        raise AttributeError(f"module 'experiments' has no attribute {name!r}")
    value = getattr(importlib.import_module(_FACE[name]), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(list(globals()) + __all__)
