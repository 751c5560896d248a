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
from baselines.nats_jetstream import NatsJetStreamBackend, stream_of
from baselines.servers.replicated import ReplicatedTopology, local_cluster, probe_binaries

ADDRESS_KEY = "nats-cluster"
CLUSTER_ENV = "LOGQUEUE_NATS_CLUSTER"
START_HINT = "python -m baselines.servers nats-cluster DIR (it prints the variables to export)"


def client_env(cluster) -> dict[str, str]:
    """The environment that points this backend's clients at ``cluster`` (a started ``NatsCluster``)."""
    return {CLUSTER_ENV: cluster.spec}


class NatsClusterTopology(ReplicatedTopology):
    isolation = "the node's client links and every route link to and from it are blackholed (per-link proxies)"

    def make_cluster(self, run_dir, route):
        from baselines.servers.nats_cluster import NatsCluster

        return NatsCluster(run_dir, route_via=route)

    def cluster_queue(self) -> str | None:
        return stream_of(self.queue) if self.queue is not None else None

    def client_env(self, links: dict[str, str]) -> dict[str, str]:
        return {CLUSTER_ENV: self.node_links(links)}

    def catching_up(self, node):
        """The entries ``node``'s replica of the stream lacks, and whether the stream's leader reports it
        current with no lag (the JetStream API's stream info)."""
        name = self.node_name(node)
        stream = self.cluster_queue()
        state = self.cluster.replica(stream, name, ask_others=True)  # it may be cut off now
        return (None if state is None else state[1]), lambda: self.cluster.replica(stream, name) == (True, 0)

    def config_addresses(self, links: dict[str, str]) -> dict[str, str]:
        return {ADDRESS_KEY: self.node_links(links)}


class NatsJetStreamClusterBackend(NatsJetStreamBackend):
    name = "nats-jetstream-cluster"
    durability = "publish ack: committed by the stream's Raft group, stored on a majority (2 of 3) of its replicas"
    replicas = 3
    confirmed_on = 2  # a majority of the stream's replicas

    @classmethod
    def topology(cls, private: bool = False, external=None) -> NatsClusterTopology:
        """A private 3-server cluster, one per ``experiments run`` (``private`` or not: the shared NATS is
        one server)."""
        return NatsClusterTopology()

    @classmethod
    def probe(cls, external=None) -> str | None:
        return probe_binaries(cls.name, [("nats-server", "nats-server", None)])

    @classmethod
    def local_servers(cls, fresh: bool = True):
        """A private 3-server cluster for one command (see ``baselines.servers.replicated.local_cluster``)."""
        from baselines.servers.nats_cluster import NatsCluster

        return local_cluster(NatsCluster, client_env, lambda c: {ADDRESS_KEY: c.spec}, CLUSTER_ENV, fresh)

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
