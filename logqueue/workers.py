"""Load plug-in worker functions ``fn(payload: bytes) -> bytes``.

A function is named as ``module:function`` (module importable from ``sys.path``) or by a
name registered under the entry-point group ``logqueue.workers``.
"""
from __future__ import annotations

import importlib
from importlib.metadata import entry_points
from typing import Callable

WorkerFn = Callable[[bytes], bytes]
ENTRY_POINT_GROUP = "logqueue.workers"


class WorkerLoadError(ValueError):
    """The named worker function cannot be found or is not callable."""


def load_function(spec: str) -> WorkerFn:
    """Return the worker function named by ``spec``.

    Raises:
        WorkerLoadError: with a one-line reason when the name does not resolve.
    """
    if ":" in spec:
        module_name, _, attr = spec.partition(":")
        try:
            module = importlib.import_module(module_name)
        except ImportError as exc:
            raise WorkerLoadError(f"cannot import module {module_name!r} for worker {spec!r}: {exc}") from None
        fn = module
        for part in attr.split("."):
            fn = getattr(fn, part, None)
            if fn is None:
                raise WorkerLoadError(f"module {module_name!r} has no attribute {attr!r}")
    else:
        matches = [ep for ep in entry_points(group=ENTRY_POINT_GROUP) if ep.name == spec]
        if not matches:
            known = sorted(ep.name for ep in entry_points(group=ENTRY_POINT_GROUP))
            raise WorkerLoadError(
                f"no worker named {spec!r}: use MODULE:FUNCTION or one of the registered names {known}"
            )
        fn = matches[0].load()
    if not callable(fn):
        raise WorkerLoadError(f"worker {spec!r} is not callable")
    return fn
