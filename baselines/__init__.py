"""One adapter per work-distribution system behind :class:`Backend`, logqueue's included.

    from baselines import Backend, BackendConfig, get, names
    backend = get("redis-streams")(BackendConfig(queue="jobs"))
"""
from __future__ import annotations

from baselines.base import AckError, Backend, BackendConfig, BackendError, BackendUnavailable, Consumer, Delivery
from baselines.registry import UnknownBackend, get, names, parse_backends

__all__ = ["Backend", "BackendConfig", "Consumer", "Delivery", "BackendError", "BackendUnavailable", "AckError",
           "UnknownBackend", "get", "names", "parse_backends"]
