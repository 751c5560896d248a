"""A private 3-node RabbitMQ cluster on loopback, for quorum queues that can fail over.

Each node is ``/usr/lib/rabbitmq/bin/rabbitmq-server`` run directly as the invoking user
(not through ``/usr/sbin``'s wrapper, which drops to the ``rabbitmq`` user and needs
every directory to be its own): ``RUNNING_UNDER_SYSTEMD`` makes the script ``exec`` the
Erlang VM, so the node's process *is* ``beam.smp`` and a SIGKILL of it is a node crash.
Per node: its own ``RABBITMQ_NODENAME`` (``lq<token>-<i>@localhost``, unique per
cluster, so clusters of other runs in the shared epmd never clash), AMQP port,
distribution port, data, logs, pid file and enabled-plugins file, and a config file with
``listeners.tcp.local = 127.0.0.1:PORT`` (the machine's own config pins the listener to
5672 and wins over ``RABBITMQ_NODE_PORT``). ``HOME`` is the cluster's directory, which
holds the cluster's own Erlang cookie, so neither the servers nor ``rabbitmqctl`` ever
reach the shared node. ``+S 1:1`` keeps three nodes within two cores.

Forming: nodes 2 and 3, one after the other, ``stop_app``, ``join_cluster`` node 1, ``start_app``. A restarted
node rejoins by itself (its data remembers the cluster). The leader of a quorum queue is
what ``rabbitmqctl list_queues name leader`` says on a live node; each member's Raft
state and log index is what ``rabbitmq-queues quorum_status`` says.
"""
from __future__ import annotations

import json
import os
import secrets
import subprocess
from collections.abc import Callable

from baselines.servers.nodes import ClusterError, Node, PrivateCluster, require_binary
from logqueue.local_cluster import free_ports

SERVER = "/usr/lib/rabbitmq/bin/rabbitmq-server"
CTL = "/usr/lib/rabbitmq/bin/rabbitmqctl"
QUEUES = "/usr/lib/rabbitmq/bin/rabbitmq-queues"
CTL_TIMEOUT_S = 60.0


def rabbitmqctl(home: str | os.PathLike, node: str, *args: str, timeout_s: float = CTL_TIMEOUT_S,
                tool: str = CTL) -> str:
    """Run ``rabbitmqctl -n node ARGS`` (or another of the CLI ``tool``s) with the Erlang cookie in ``home``;
    its stdout, or ``ClusterError``."""
    ctl = require_binary("rabbitmq-cluster", os.path.basename(tool), "rabbitmq-server", tool)
    try:
        done = subprocess.run([ctl, "-n", node, *args], capture_output=True, text=True, timeout=timeout_s,
                              env={**os.environ, "HOME": str(home)})
    except subprocess.TimeoutExpired:
        raise ClusterError(f"rabbitmqctl {' '.join(args)} on {node} took over {timeout_s:g} s") from None
    if done.returncode != 0:
        reason = " ".join((done.stderr or done.stdout).split())[:300]
        raise ClusterError(f"rabbitmqctl {' '.join(args)} on {node} failed: {reason}")
    return done.stdout


class RabbitMQCluster(PrivateCluster):
    system = "rabbitmq-cluster"
    node_start_s = 90.0

    def prepare(self) -> None:
        server = require_binary(self.system, "rabbitmq-server", "rabbitmq-server", SERVER)
        require_binary(self.system, "rabbitmqctl", "rabbitmq-server", CTL)
        self.home = self.run_dir / "home"
        self.home.mkdir(parents=True, exist_ok=True)
        cookie = self.home / ".erlang.cookie"
        if not cookie.exists():
            cookie.write_text(secrets.token_hex(16).upper())
            cookie.chmod(0o400)
        token = secrets.token_hex(3)
        ports = free_ports(2 * self.size)
        for i in range(1, self.size + 1):
            amqp, dist = ports[2 * i - 2], ports[2 * i - 1]
            base = self.run_dir / f"node-{i}"
            base.mkdir(parents=True, exist_ok=True)
            (base / "rabbitmq.conf").write_text(f"listeners.tcp.local = 127.0.0.1:{amqp}\nloopback_users = none\n")
            (base / "enabled_plugins").write_text("[].\n")
            name = f"lq{token}-{i}@localhost"
            env = {
                "HOME": str(self.home),
                "RUNNING_UNDER_SYSTEMD": "true",  # the script execs beam.smp instead of forking it
                "RABBITMQ_NODENAME": name,
                "RABBITMQ_NODE_PORT": str(amqp),
                "RABBITMQ_DIST_PORT": str(dist),
                "RABBITMQ_MNESIA_BASE": str(base / "mnesia"),
                "RABBITMQ_LOG_BASE": str(base / "log"),
                "RABBITMQ_PID_FILE": str(base / "pid"),
                "RABBITMQ_ENABLED_PLUGINS_FILE": str(base / "enabled_plugins"),
                "RABBITMQ_CONFIG_FILE": str(base / "rabbitmq.conf"),
                "RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS": "+S 1:1",
            }
            self.nodes[name] = Node(name, amqp, [server], self.run_dir / f"node-{i}.log", env)

    @property
    def node_names(self) -> list[str]:
        return list(self.nodes)

    def ctl(self, node: str, *args: str, timeout_s: float = CTL_TIMEOUT_S, tool: str = CTL) -> str:
        return rabbitmqctl(self.home, node, *args, timeout_s=timeout_s, tool=tool)

    def form(self) -> None:
        # One node at a time: two nodes joining at once can race in mnesia (seen: start_app
        # failing with {badmatch, {error, {normal, {mnesia_app, start, ...}}}}). What
        # rabbitmqctl's stop_app, join_cluster and start_app call, in one eval on the first
        # node: one Erlang VM for rabbitmqctl instead of one per command (each takes seconds).
        first, *others = self.node_names
        joining = ", ".join(f"'{n}'" for n in others)  # atoms: the names are lq<hex>-<i>@localhost
        join = ("Join = fun(N) -> "
                "ok = rpc:call(N, rabbit, stop, []), "
                f"case rpc:call(N, rabbit_mnesia, join_cluster, ['{first}', disc]) of "
                "ok -> ok; {ok, already_member} -> ok end, "
                "ok = rpc:call(N, rabbit, start, []) end, "
                f"[Join(N) || N <- [{joining}]], ok.")
        self.ctl(first, "eval", join, timeout_s=CTL_TIMEOUT_S * len(others))
        running = json.loads(self.ctl(first, "cluster_status", "--formatter", "json"))["running_nodes"]
        if sorted(running) != sorted(self.node_names):
            raise ClusterError(f"{self.system}: running nodes {running} after forming, expected {self.node_names}")

    def _queue_row(self, queue: str | Callable[[str], bool] | None) -> tuple[str, dict] | None:
        """``(live node asked, list_queues row)`` of quorum queue ``queue`` (a name, or a test of names: the
        first queue that passes), asked of the first live node that answers."""
        if queue is None:
            raise ValueError("a RabbitMQ cluster has a leader per quorum queue: name the queue")
        matches = queue if callable(queue) else (lambda name: name == queue)
        for node in self.live_nodes():
            try:
                out = self.ctl(node.name, "list_queues", "-p", "/", "name", "leader", "--formatter", "json", "-q",
                               timeout_s=15.0)
            except ClusterError:
                continue
            return next(((node.name, row) for row in json.loads(out or "[]") if matches(row.get("name", ""))), None)
        return None

    def leader(self, queue: str | Callable[[str], bool] | None = None) -> str | None:
        """The node that leads quorum queue ``queue``'s Raft group (see :meth:`_queue_row`)."""
        found = self._queue_row(queue)
        leader = found[1].get("leader") if found else None
        return leader if leader in self.nodes and self.nodes[leader].alive() else None

    def members(self, queue: str | Callable[[str], bool] | None) -> dict[str, dict]:
        """``{node: {"state", "log_index", "commit_index"}}`` of quorum queue ``queue``'s members (see
        :meth:`_queue_row`), per ``rabbitmq-queues quorum_status``; an index is ``None`` where the member
        did not answer (its state is then ``timeout``); ``{}`` when no node answers."""
        found = self._queue_row(queue)
        if found is None:
            return {}
        asked, row = found
        try:
            out = self.ctl(asked, "quorum_status", "-p", "/", row["name"], "--formatter", "json", "-q",
                           timeout_s=30.0, tool=QUEUES)
        except ClusterError:
            return {}

        def index(value):
            return value if isinstance(value, int) else None

        return {m["Node Name"]: {"state": m.get("Raft State"), "log_index": index(m.get("Log Index")),
                                 "commit_index": index(m.get("Commit Index"))} for m in json.loads(out or "[]")}
