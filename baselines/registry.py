"""Backends by name, so every tool takes ``--backends NAME,NAME|all``.

Adapters are imported lazily: a missing client library or a module that is not written
yet (``logqueue.backend``) makes that one backend unavailable, never the registry.
"""
from __future__ import annotations

import importlib

from baselines.base import Backend, BackendUnavailable

# name -> "module:Class"; order is the order of tables and reports.
BACKENDS = {
    "logqueue": "logqueue.backend:LogqueueBackend",
    "rabbitmq-classic": "baselines.rabbitmq:RabbitMQClassicBackend",
    "rabbitmq-quorum": "baselines.rabbitmq:RabbitMQQuorumBackend",
    "redis-list": "baselines.redis_list:RedisListBackend",
    "redis-streams": "baselines.redis_streams:RedisStreamsBackend",
    "celery-rabbitmq": "baselines.celery_backend:CeleryRabbitMQBackend",
    "celery-redis": "baselines.celery_backend:CeleryRedisBackend",
    "nats-jetstream": "baselines.nats_jetstream:NatsJetStreamBackend",
    "rabbitmq-quorum-cluster": "baselines.rabbitmq_quorum_cluster:RabbitMQQuorumClusterBackend",
    "nats-jetstream-cluster": "baselines.nats_jetstream_cluster:NatsJetStreamClusterBackend",
    "redis-sentinel": "baselines.redis_sentinel:RedisSentinelBackend",
    "stub": "baselines.stub:StubBackend",
}

# In-process only, for unit tests: never part of "all".
NOT_IN_ALL = {"stub"}


class UnknownBackend(ValueError):
    """A backend name that is not registered."""


def names() -> list[str]:
    """Every registered name, ``stub`` included."""
    return list(BACKENDS)


def get(name: str) -> type[Backend]:
    """The backend class registered as ``name``.

    Raises:
        UnknownBackend: the name is not registered.
        BackendUnavailable: its module cannot be imported (the reason is in the message).
    """
    try:
        target = BACKENDS[name]
    except KeyError:
        raise UnknownBackend(f"unknown backend {name!r}; known: {', '.join(BACKENDS)} (or 'all')") from None
    module_name, _, attr = target.partition(":")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise BackendUnavailable(f"{name}: adapter module {module_name} cannot be imported ({exc})") from None
    return getattr(module, attr)


def parse_backends(spec: str) -> list[str]:
    """``"a,b"`` or ``"all"`` -> names, in the order given (``all``: every backend but the stub).

    Raises:
        UnknownBackend: for a name that is not registered, naming the known ones.
    """
    parts = [p.strip() for p in spec.split(",") if p.strip()]
    if not parts:
        raise UnknownBackend("no backend named; use NAME,NAME or 'all'")
    chosen: list[str] = []
    for part in parts:
        for name in ([n for n in BACKENDS if n not in NOT_IN_ALL] if part == "all" else [part]):
            if name not in BACKENDS:
                raise UnknownBackend(f"unknown backend {name!r}; known: {', '.join(BACKENDS)} (or 'all')")
            if name not in chosen:
                chosen.append(name)
    return chosen
