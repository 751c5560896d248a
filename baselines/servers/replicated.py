"""The topology of a replicated baseline: its private cluster, behind the run's proxies.

A :class:`ReplicatedTopology` starts a ``baselines.servers`` cluster in the run directory
and gives the run's clients one proxy link per node (``node-1..3``; for Redis also one
per Sentinel). Node ids are 1..3; events name a node as the system itself names it
(``lq1a2b3c-1@localhost``, ``lq1a2b3c-2``, ``redis-3``), so a fault event says which node
the system reported as the leader.

Leader: the node that leads the run's queue -- the one ``use_queue`` named; the cluster
serves the runs of one ``experiments run`` in turn, and each deletes its queue at the end --
as the system says (see each cluster's ``leader``). ``spawn`` starts a node again without
waiting (RabbitMQ nodes restarted together wait for each other's tables); ``ready`` waits
until every node serves and the cluster has settled (``PrivateCluster.settled``), and each
backend's ``catching_up`` until a node's data has caught up.

Isolation (``broker-partition``, ``follower-lag``) cuts the node's client links and, per
system, its peer links (``isolation`` says how, and the scenarios note it): NATS routes
go through per-link proxies (node *i* dials node *j*'s route port through the link
``<i>-><j>``); so do Redis's replication and the Sentinels' links to the nodes (see
``baselines.redis_sentinel``); RabbitMQ's Erlang distribution cannot be routed through
proxies (its nodes find each other through epmd), so its nodes run in network namespaces
of the run's own and ``isolate`` drops the peers' packets inside the node's namespace --
or, where no namespace can be made, pauses the node (SIGSTOP) until the heal (see
``baselines.rabbitmq_quorum_cluster``). ``catching_up`` reads the follower's data as the
system reports it.
"""
from __future__ import annotations

import contextlib
import os
from collections.abc import Callable
from pathlib import Path

from baselines.servers.nodes import ClusterError, ClusterUnavailable, PrivateCluster, require_binary, wait_for
from baselines.servers.topology import ServerStartError, Topology


class ReplicatedTopology(Topology):
    """A private cluster for the runs of one ``experiments run``. Subclasses (one per backend, in its adapter module) say
    how to make the cluster, which queue is the run's, how clients are pointed at their links,
    and how a node is isolated.

    Attributes: ``isolation`` -- one line, how ``broker-partition``/``follower-lag`` cut a node
    off (noted in the run); ``pause_to_isolate`` -- the node is also SIGSTOPped while it is cut off.
    """

    everything = "cluster"
    isolation = ""
    pause_to_isolate = False

    def __init__(self) -> None:
        super().__init__(node_faults=None)
        self.node_faults = None
        self.cluster: PrivateCluster | None = None
        self.nodes = []
        self.routes: dict[tuple[int, int], str] = {}  # (i, j) -> the hub link node i dials node j through

    def make_cluster(self, run_dir: Path, route: Callable[[int, int, str], str]) -> PrivateCluster:
        """An unstarted cluster in ``run_dir`` whose node *i* dials node *j*'s peer port ``address`` at
        ``route(i, j, address)`` where the system allows it (a proxy link of the run's hub)."""
        raise NotImplementedError

    def cluster_queue(self) -> str | None:
        """The name the system knows the run's work queue (``self.queue``) by -- its quorum queue, its stream --,
        whose leader ``leader`` names; ``None`` before ``use_queue``."""
        return self.queue

    # --- lifecycle ----------------------------------------------------------------------

    def start(self, run_dir: Path, links=None) -> None:
        super().start(run_dir, links)
        self.cluster = self.make_cluster(run_dir / "cluster", self._route)
        try:
            self.cluster.start()
        except (ClusterUnavailable, ClusterError) as exc:
            raise ServerStartError(str(exc)) from None
        self.names = list(self.cluster.nodes)
        self.nodes = list(range(1, len(self.names) + 1))

    def ready(self, timeout_s: float = 60.0) -> None:
        """Every node serves (a node that died on the way is a ``ServerStartError``) and the cluster has settled."""
        try:
            for node in self.cluster.nodes.values():
                self.cluster.await_node(node)
            wait_for(self.cluster.settled, timeout_s, f"{self.cluster.system}: the cluster did not settle", poll_s=0.2)
        except ClusterError as exc:
            raise ServerStartError(str(exc)) from None

    def close(self) -> None:
        if self.cluster is not None:
            self.cluster.stop()

    # --- what clients see ---------------------------------------------------------------

    def node(self, node: int):
        return self.cluster.nodes[self.names[node - 1]]

    def node_name(self, node) -> str:
        return self.names[node - 1] if self.cluster is not None else f"node-{node}"

    def server_of(self, node) -> str:
        return f"node-{node}"

    def servers(self) -> dict[str, str]:
        return {f"node-{i}": self.node(i).address for i in self.nodes}

    def node_links(self, links: dict[str, str]) -> str:
        """A client's links to every node, ``h:p,h:p,h:p``."""
        return ",".join(links[f"node-{i}"] for i in self.nodes)

    def _route(self, i: int, j: int, address: str) -> str:
        name = self.routes[(i, j)] = f"node-{i}->node-{j}"
        self.links.add(name, address)
        return self.links.address(name)

    def peer_links(self, node) -> list[str]:
        return [name for (i, j), name in self.routes.items() if node in (i, j)]

    # --- state --------------------------------------------------------------------------

    def leader(self):
        name = self.cluster.leader(self.cluster_queue())
        return self.names.index(name) + 1 if name in self.names else None

    def catching_up(self, node):
        """The fallback where the system reports nothing of the node's data: it serves again."""
        return None, lambda: self.node(node).up()

    # --- node faults --------------------------------------------------------------------

    def process(self, node):
        return self.node(node).proc

    def kill(self, node) -> None:
        self.cluster.kill(self.node_name(node))

    def spawn(self, node) -> int:
        n = self.node(node)
        if n.alive():
            self.cluster.kill(n.name)
        self.cluster.spawn(n)
        return n.pid

    def pause(self, node) -> None:
        self.cluster.pause(self.node_name(node))

    def resume(self, node) -> None:
        self.cluster.resume(self.node_name(node))

    def isolate(self, node) -> None:
        """What cutting ``node``'s links leaves to do: pause it where its peer links are not proxied."""
        if self.pause_to_isolate:
            self.pause(node)

    def rejoin(self, node) -> None:
        if self.pause_to_isolate and self.node(node).paused:
            self.resume(node)


def probe_binaries(backend: str, binaries) -> str | None:
    """``None`` when every ``(binary, Debian package, path or None)`` is installed, else the one line naming it."""
    try:
        for binary, package, path in binaries:
            require_binary(backend, binary, package, path)
    except ClusterUnavailable as exc:
        return str(exc)
    return None


@contextlib.contextmanager
def local_cluster(make_cluster: Callable[[str], PrivateCluster], client_env: Callable[[PrivateCluster], dict],
                  addresses: Callable[[PrivateCluster], dict], configured: str, fresh: bool):
    """``Backend.local_servers`` of a backend on a private cluster: one in a temporary directory, exported to
    this process and its children while the block runs; yields ``addresses(cluster)``. With ``fresh`` False
    and the variable ``configured`` set (the user's cluster, e.g. docker-compose's), yields ``{}``."""
    if not fresh and os.environ.get(configured):
        yield {}
        return
    import tempfile

    with tempfile.TemporaryDirectory(prefix="lq-cluster-") as root:
        cluster = make_cluster(root)
        with cluster, exported(client_env(cluster)):
            yield addresses(cluster)


@contextlib.contextmanager
def exported(env: dict[str, str]):
    """Set ``env`` in this process's environment (inherited by worker processes) while the block runs."""
    previous = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    try:
        yield
    finally:
        for k, v in previous.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
