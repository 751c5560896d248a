"""``rabbitmq-quorum-cluster``: ``rabbitmq-quorum`` on a 3-node RabbitMQ cluster, queues with three members.

Everything ``baselines.rabbitmq`` says of ``rabbitmq-quorum`` holds (persistent messages,
publisher confirms, manual acks, ``x-delivery-limit`` from ``max_attempts``, the
per-consumer ack timeout); in addition the queue is declared with
``x-quorum-initial-group-size`` = 3, so its Raft group has a member on every node.

What a confirm promises: the broker confirms a publish to a quorum queue once a majority
of its members (2 of 3) has written it to its Raft log and fsynced it, so a confirmed job
survives the crash of any one node, the leader included.

The cluster: ``BackendConfig.addresses["rabbitmq-cluster"]`` or ``$LOGQUEUE_RABBITMQ_CLUSTER``,
comma-separated ``HOST:PORT`` of the nodes' AMQP listeners. Every connection tries the
nodes in a shuffled order (pika takes a list of parameters), so clients spread over the
nodes and one whose node goes away reconnects to another. The ack timeout
(``consumer_timeout`` and the channel tick) is set on every running node of the cluster
with one ``rabbitmqctl eval`` (``rpc`` to each node), which needs the nodes' Erlang
names (``$LOGQUEUE_RABBITMQ_CLUSTER_NODES``) and a directory holding the cluster's
cookie (``$LOGQUEUE_RABBITMQ_CLUSTER_HOME``): :func:`client_env` gives all three for a
started :class:`baselines.servers.rabbitmq_cluster.RabbitMQCluster`. Without them the
nodes' own ``consumer_timeout`` applies and a warning says so.
"""
from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import random

from baselines.base import BackendUnavailable
from baselines.rabbitmq import LOCK_PATH, MIN_TICK_MS, RabbitMQQuorumBackend
from baselines.servers.nodes import ClusterError, ClusterUnavailable
from baselines.servers.replicated import ReplicatedTopology, local_cluster, probe_binaries

log = logging.getLogger(__name__)

ADDRESS_KEY = "rabbitmq-cluster"
CLUSTER_ENV = "LOGQUEUE_RABBITMQ_CLUSTER"
NODES_ENV = "LOGQUEUE_RABBITMQ_CLUSTER_NODES"
HOME_ENV = "LOGQUEUE_RABBITMQ_CLUSTER_HOME"
START_HINT = "python -m baselines.servers rabbitmq-cluster DIR (it prints the variables to export)"
MEMBERS = 3
# A paused node (SIGSTOP) never answers rabbitmqctl: give up on it after this and ask the next.
CTL_EVAL_S = 8.0
NAMESPACE_ISOLATION = ("the node's client links are blackholed, and iptables rules in its network namespace (each "
                       "node runs in one the run made) DROP every packet between it and its peers: its Erlang "
                       "distribution links are cut; the run's own rabbitmqctl still reaches it")
PAUSE_ISOLATION = ("the node's client links are blackholed and the node is paused (SIGSTOP): its Erlang distribution "
                   "links cannot be routed through the run's proxies (a node learns its peers' distribution ports "
                   "from epmd and dials them directly) and no network namespace per node can be made here ({why}), "
                   "so a paused node stands for a cut-off one")


def client_env(cluster) -> dict[str, str]:
    """The environment that points this backend's clients at ``cluster`` (a started ``RabbitMQCluster``)."""
    return {CLUSTER_ENV: cluster.spec, NODES_ENV: ",".join(cluster.node_names), HOME_ENV: str(cluster.home)}


class RabbitMQClusterTopology(ReplicatedTopology):
    """The nodes run in network namespaces of the run's own where this machine allows it
    (``baselines.servers.netns.unavailable``), so that isolating a node cuts its Erlang
    distribution links; elsewhere an isolated node is paused. ``isolation`` says which."""

    def make_cluster(self, run_dir, route):
        from baselines.servers.netns import unavailable
        from baselines.servers.rabbitmq_cluster import RabbitMQCluster

        why = unavailable()
        self.pause_to_isolate = why is not None
        self.isolation = NAMESPACE_ISOLATION if why is None else PAUSE_ISOLATION.format(why=why)
        return RabbitMQCluster(run_dir, namespaces=why is None)

    def isolate(self, node) -> None:
        if self.cluster.network is None:
            super().isolate(node)
        else:
            self.cluster.cut(self.node_name(node))

    def rejoin(self, node) -> None:
        if self.cluster.network is None:
            super().rejoin(node)
        elif self.node(node).cut_off:
            self.cluster.heal(self.node_name(node))

    def client_env(self, links: dict[str, str]) -> dict[str, str]:
        return {**client_env(self.cluster), CLUSTER_ENV: self.node_links(links)}

    def catching_up(self, node):
        """The Raft entries ``node``'s member of the queue lacks, and whether it is a follower again whose
        log reaches the highest commit index of now (``rabbitmq-queues quorum_status``). A node cut off its
        peers is asked about its own member (the run's rabbitmqctl still reaches it); a paused one answers
        nothing, so its lag is ``None``."""
        name = self.node_name(node)
        members = self.cluster.members(self.queue)
        target = max((m["commit_index"] or 0 for m in members.values()), default=0)
        own = members.get(name, {}).get("log_index")
        if own is None and self.node(node).cut_off:
            own = self.cluster.members(self.queue, ask=name).get(name, {}).get("log_index")

        def caught_up() -> bool:
            member = self.cluster.members(self.queue).get(name, {})
            index = member.get("log_index")
            return member.get("state") in ("follower", "leader") and index is not None and index >= target

        return (None if own is None else max(0, target - own)), caught_up

    def config_addresses(self, links: dict[str, str]) -> dict[str, str]:
        return {ADDRESS_KEY: self.node_links(links)}


class RabbitMQQuorumClusterBackend(RabbitMQQuorumBackend):
    name = "rabbitmq-quorum-cluster"
    durability = "publisher confirm: on the Raft logs of a majority (2 of 3) of the quorum queue's members, fsynced"
    replicas = MEMBERS
    confirmed_on = MEMBERS // 2 + 1  # a majority of the members

    @classmethod
    def topology(cls, private: bool = False, external=None) -> RabbitMQClusterTopology:
        """A private 3-node cluster, one per ``experiments run`` (``private`` or not: the shared RabbitMQ
        is one node)."""
        return RabbitMQClusterTopology()

    @classmethod
    def probe(cls, external=None) -> str | None:
        from baselines.servers.rabbitmq_cluster import CTL, SERVER

        return probe_binaries(cls.name, [("rabbitmq-server", "rabbitmq-server", SERVER),
                                         ("rabbitmqctl", "rabbitmq-server", CTL)])

    @classmethod
    def local_servers(cls, fresh: bool = True):
        """A private 3-node cluster for one command (see ``baselines.servers.replicated.local_cluster``)."""
        from baselines.servers.rabbitmq_cluster import RabbitMQCluster

        return local_cluster(RabbitMQCluster, client_env, lambda c: {ADDRESS_KEY: c.spec}, CLUSTER_ENV, fresh)

    def node_addresses(self) -> list[str]:
        spec = self.config.addresses.get(ADDRESS_KEY) or os.environ.get(CLUSTER_ENV, "")
        nodes = [a.strip() for a in spec.split(",") if a.strip()]
        random.shuffle(nodes)
        return nodes

    def unreachable(self, reason: str) -> BackendUnavailable:
        spec = self.config.addresses.get(ADDRESS_KEY) or os.environ.get(CLUSTER_ENV)
        if not spec:
            return BackendUnavailable(f"{self.name}: no cluster given (set ${CLUSTER_ENV} to HOST:PORT,...); "
                                      f"start it with: {START_HINT}")
        return BackendUnavailable(f"{self.name}: cannot reach any node of {spec} ({' '.join(reason.split())}); "
                                  f"start it with: {START_HINT}")

    def open_connection(self):
        if not self.node_addresses():
            raise self.unreachable("no nodes")
        return super().open_connection()

    def queue_arguments(self) -> dict:
        return {**super().queue_arguments(), "x-quorum-initial-group-size": MEMBERS}

    def __init__(self, config) -> None:
        super().__init__(config)
        self._timeout_set = False  # connect set the nodes' consumer_timeout; no consumer has used that yet

    def connect(self) -> None:
        """Set the nodes' ack timeout first (see ``consumer_timeout``), then connect and declare."""
        with self._timeout_lock():
            self._timeout_set = self._set_cluster_consumer_timeout()
            super().connect()

    @contextlib.contextmanager
    def _timeout_lock(self):
        """The cluster's own lock (in its home directory), else the machine-wide one of ``baselines.rabbitmq``."""
        home = os.environ.get(HOME_ENV)
        with open(os.path.join(home, "consumer-timeout.lock") if home else LOCK_PATH, "a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            yield

    @contextlib.contextmanager
    def consumer_timeout(self):
        """Set ``consumer_timeout`` (and lower the channel tick) on every running node, under the cluster's lock.

        ``connect`` has just set it, so the first consumer's channel opens at once; a consumer
        that reconnects later (its node restarted: back to the node's default) sets it again.
        """
        with self._timeout_lock():
            fresh, self._timeout_set = self._timeout_set, False
            if not fresh and not self._set_cluster_consumer_timeout():
                log.warning("%s: could not set the nodes' consumer_timeout (need $%s and $%s); the nodes' own applies",
                            self.name, NODES_ENV, HOME_ENV)
            yield

    def _set_cluster_consumer_timeout(self) -> bool:
        from baselines.servers.rabbitmq_cluster import rabbitmqctl

        nodes, home = os.environ.get(NODES_ENV, ""), os.environ.get(HOME_ENV)
        timeout_ms = max(1, int(self.config.timeout_s * 1000))
        tick_ms = max(MIN_TICK_MS, timeout_ms // 5)
        # Each rpc is bounded (5 s), so a paused node does not hold up the others.
        expr = (
            "Set = fun(N) -> "
            f"rpc:call(N, application, set_env, [rabbit, consumer_timeout, {timeout_ms}], 5000), "
            "case rpc:call(N, application, get_env, [rabbit, channel_tick_interval], 5000) of "
            f"{{ok, Tick}} -> rpc:call(N, application, set_env, [rabbit, channel_tick_interval, min(Tick, {tick_ms})], 5000); "
            "_ -> skipped end end, "
            "[Set(N) || N <- [node() | nodes()]], ok."
        )
        candidates = [n for n in nodes.split(",") if n] if home else []
        random.shuffle(candidates)  # a paused node costs CTL_EVAL_S: not always the same one first
        for node in candidates:
            try:
                rabbitmqctl(home, node, "eval", expr, timeout_s=CTL_EVAL_S)
                return True
            except (ClusterError, ClusterUnavailable):
                continue  # that node is down: ask the next one
        return False
