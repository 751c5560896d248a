"""``nats-jetstream-cluster``: ``nats-jetstream`` on three clustered ``nats-server`` processes, R3 streams.

Everything ``baselines.nats_jetstream`` says holds (work-queue retention, file storage,
the durable pull consumer ``workers`` with explicit acks, ``AckWait`` = ``timeout_s``,
``MaxDeliver`` = ``max_attempts``, ``AckProgress`` every ``heartbeat_s``); in addition the
job stream, the dead-letter stream and the blob store have three replicas
(``num_replicas=3``), and the durable consumer inherits them.

What a confirm promises: JetStream answers a publish to an R3 stream once the stream's
Raft group has committed it, i.e. a majority (2 of 3) of the replicas stored it, so a
confirmed job survives the crash of any one server, the stream leader included.
(Whether a replica has also fsynced it by then is the server's file-store sync policy,
left at its default here; the promise is about surviving one crash, not two at once.)

The cluster: ``BackendConfig.addresses["nats-cluster"]`` or ``$LOGQUEUE_NATS_CLUSTER``,
comma-separated ``HOST:PORT`` of the servers' client ports; nats-py holds the list,
picks a server at random and reconnects to another when its server goes away.
"""
from __future__ import annotations

import os

from baselines.base import BackendUnavailable
from baselines.nats_jetstream import NatsJetStreamBackend

ADDRESS_KEY = "nats-cluster"
CLUSTER_ENV = "LOGQUEUE_NATS_CLUSTER"
START_HINT = "python -m baselines.servers nats-cluster DIR (it prints the variables to export)"


def client_env(cluster) -> dict[str, str]:
    """The environment that points this backend's clients at ``cluster`` (a started ``NatsCluster``)."""
    return {CLUSTER_ENV: cluster.spec}


class NatsJetStreamClusterBackend(NatsJetStreamBackend):
    name = "nats-jetstream-cluster"
    replicas = 3

    def _spec(self) -> str:
        return self.config.addresses.get(ADDRESS_KEY) or os.environ.get(CLUSTER_ENV, "")

    def server_addresses(self) -> list[str]:
        return [a.strip() for a in self._spec().split(",") if a.strip()]

    def unreachable(self, reason: object) -> BackendUnavailable:
        if not self._spec():
            return BackendUnavailable(f"{self.name}: no cluster given (set ${CLUSTER_ENV} to HOST:PORT,...); "
                                      f"start it with: {START_HINT}")
        return BackendUnavailable(f"{self.name}: cannot reach any server of {self._spec()} "
                                  f"({' '.join(str(reason).split())}); start it with: {START_HINT}")
