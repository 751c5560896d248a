"""Load plug-in worker functions ``fn(payload: bytes) -> bytes`` or ``fn(payload, ctx) -> bytes``.

A function is named as ``module:function`` (module importable from ``sys.path``) or by a
name registered under the entry-point group ``logqueue.workers``. Whether it takes the
``JobContext`` is decided once, from its signature, by ``worker_function``: a function
with two positional parameters (or ``*args``) gets it, a function with one does not.
"""
from __future__ import annotations

import functools
import importlib
import inspect
from importlib.metadata import entry_points
from typing import Callable

from logqueue.client.context import JobContext

WorkerFn = Callable[[bytes, JobContext], bytes]  # what worker_function returns and the workers call
ENTRY_POINT_GROUP = "logqueue.workers"
_POSITIONAL = (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)


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
    return worker_function(fn, spec)


def worker_function(fn: Callable, name: str | None = None) -> WorkerFn:
    """``fn`` as a function of ``(payload, ctx)``: itself when it takes the context, else a
    wrapper that drops it. Safe to apply twice.

    Raises:
        WorkerLoadError: ``fn`` requires more than two positional arguments, or none.
    """
    try:
        params = list(inspect.signature(fn).parameters.values())
    except (TypeError, ValueError):  # a builtin without a signature: the payload alone
        params = []
    positional = [p for p in params if p.kind in _POSITIONAL]
    required = [p for p in positional if p.default is inspect.Parameter.empty]
    var_positional = any(p.kind is inspect.Parameter.VAR_POSITIONAL for p in params)
    if params and (len(required) > 2 or not (positional or var_positional)):
        raise WorkerLoadError(f"worker {name or getattr(fn, '__qualname__', fn)!r} must take (payload) or "
                              f"(payload, ctx), not {inspect.signature(fn)}")
    if len(positional) >= 2 or var_positional:
        return fn

    @functools.wraps(fn)
    def payload_only(payload: bytes, ctx: JobContext) -> bytes:
        return fn(payload)

    del payload_only.__wrapped__  # its own signature is (payload, ctx): applying this again keeps it
    return payload_only
