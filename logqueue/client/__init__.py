"""The client side of the log service: connections with leader discovery and retries
(``Client``, ``AsyncClient``), the work-queue API on them (``Producer``, ``Consumer``)
and a worker that runs a plug-in function on a queue's jobs (``Worker``)."""
from logqueue.client.client import (
    AsyncClient,
    Client,
    ClientError,
    Unavailable,
    parse_cluster,
)
from logqueue.client.consumer import AsyncConsumer, Consumer, Job, LeaseLost
from logqueue.client.producer import AsyncProducer, Producer
from logqueue.client.worker import Worker, WorkerStats

__all__ = [
    "AsyncClient", "AsyncConsumer", "AsyncProducer", "Client", "ClientError", "Consumer", "Job", "LeaseLost",
    "Producer", "Unavailable", "Worker", "WorkerStats", "parse_cluster",
]
