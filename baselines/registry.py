"""Backends by name, so every tool takes ``--backends NAME,NAME|all``.

The built-in adapters below, plus the entry points of the group ``logqueue.backends``
(``name = "module:Class"``, a ``Backend`` subclass) of any installed distribution.
Adapters are imported lazily: a missing client library or a broken plug-in makes that
one backend unavailable, with the reason, never the registry.
"""
from __future__ import annotations

from baselines.base import Backend, BackendUnavailable
from baselines.plugins import Registry

ENTRY_POINT_GROUP = "logqueue.backends"

# name -> "module:Class"; order is the order of tables and reports.
BACKENDS = {
    "logqueue": "baselines.logqueue:LogqueueBackend",
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


REGISTRY = Registry("backend", BACKENDS, ENTRY_POINT_GROUP, UnknownBackend, module_label="adapter")


def names() -> list[str]:
    """Every registered name, ``stub`` included: the built-ins, then the plug-ins."""
    return REGISTRY.names()


def get(name: str) -> type[Backend]:
    """The backend class registered as ``name``.

    Raises:
        UnknownBackend: the name is not registered.
        BackendUnavailable: its module cannot be imported (the reason is in the message).
    """
    cls = REGISTRY.load(name, on_error=lambda _name, reason: BackendUnavailable(reason))
    if not (isinstance(cls, type) and issubclass(cls, Backend)):
        raise BackendUnavailable(f"{name}: registered as {cls!r}, which is not a baselines.Backend subclass")
    return cls


def parse_backends(spec: str) -> list[str]:
    """``"a,b"`` or ``"all"`` -> names, in the order given (``all``: every backend but the stub).

    Raises:
        UnknownBackend: for a name that is not registered, naming the known ones.
    """
    return REGISTRY.parse(spec, exclude_from_all=NOT_IN_ALL)
