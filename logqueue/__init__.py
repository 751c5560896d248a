"""logqueue: a Raft-replicated, durable log with a work queue on it.

The public face is the client: ``Client``/``AsyncClient`` talk to a cluster (any node;
followers redirect to the leader), ``Producer`` enqueues jobs idempotently, ``Consumer``
claims them under leases with fencing tokens, ``Worker`` runs a plug-in function on them
and records each result in the log exactly once. Nodes are run with the ``logqueue``
command (``logqueue.cli``).
"""
from importlib.metadata import PackageNotFoundError, version

from logqueue.client import (
    AsyncClient,
    AsyncConsumer,
    AsyncProducer,
    Client,
    ClientError,
    Consumer,
    Job,
    Producer,
    Worker,
)

try:
    __version__ = version("logqueue")
except PackageNotFoundError:  # running from a source tree that was never installed
    __version__ = "0+unknown"

__all__ = [
    "AsyncClient", "AsyncConsumer", "AsyncProducer", "Client", "ClientError", "Consumer", "Job", "Producer",
    "Worker", "__version__",
]
