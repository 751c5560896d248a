"""A private 3-node RabbitMQ cluster, for quorum queues that can fail over.

Each node is ``/usr/lib/rabbitmq/bin/rabbitmq-server`` run directly as the invoking user
(not through ``/usr/sbin``'s wrapper, which drops to the ``rabbitmq`` user and needs
every directory to be its own): ``RUNNING_UNDER_SYSTEMD`` makes the script ``exec`` the
Erlang VM, so the node's process *is* ``beam.smp`` and a SIGKILL of it is a node crash.
Per node: its own ``RABBITMQ_NODENAME`` (``lq<token>-<i>@HOST``, unique per cluster, so
clusters of other runs in a shared epmd never clash), AMQP port, distribution port, data,
logs, pid file and enabled-plugins file, and a config file with
``listeners.tcp.local = HOST:PORT`` (the machine's own config pins the listener to
5672 and wins over ``RABBITMQ_NODE_PORT``). ``HOME`` is the cluster's directory, which
holds the cluster's own Erlang cookie, so neither the servers nor ``rabbitmqctl`` ever
reach the shared node. ``+S 1:1`` keeps three nodes within two cores.

Where the nodes run: on loopback (``HOST`` is ``localhost``, free ports, the machine's
epmd), or -- with ``namespaces`` -- each in a network namespace of the cluster's own
(``baselines.servers.netns``): ``HOST`` is the node's address there, the ports are
RabbitMQ's standard ones, the names are long (``RABBITMQ_USE_LONGNAME``), each namespace
has its own epmd, and the machine's ``rabbitmq-env.conf`` (which pins epmd and the
distribution to 127.0.0.1) is replaced by an empty one. Only then can a node be cut off
its peers (:meth:`RabbitMQCluster.cut`): their Erlang distribution is not routed through
anything a run could proxy. Partitions longer than the distribution's tick time heal by
``cluster_partition_handling = autoheal``. The tick time is OTP's 60 s unless ``net_ticktime_s``
sets it (for the servers, and -- through a file in ``HOME`` -- for every ``rabbitmqctl`` of the
cluster: a CLI node with a longer tick would be dropped by the servers as down).

Forming: nodes 2 and 3, one after the other, ``stop_app``, ``join_cluster`` node 1, ``start_app``. A restarted
node rejoins by itself (its data remembers the cluster). Each member of a quorum queue's Raft
group -- its state, term and log index, hence the leader -- is what ``rabbitmq-queues
quorum_status`` says on a live node.
"""
from __future__ import annotations

import json
import os
import secrets
import subprocess
from pathlib import Path

from baselines.servers.netns import NetnsError, NodeNetwork
from baselines.servers.nodes import ClusterError, Node, PrivateCluster, require_binary
from logqueue.local_cluster import free_ports

SERVER = "/usr/lib/rabbitmq/bin/rabbitmq-server"
CTL = "/usr/lib/rabbitmq/bin/rabbitmqctl"
# In a cluster's HOME beside its Erlang cookie: the distribution's tick time, when not OTP's default.
TICKTIME_FILE = "net_ticktime"
CTL_TIMEOUT_S = 60.0
# After a partition longer than the distribution's tick time (60 s) the side that lost restarts and
# rejoins; RabbitMQ's default (``ignore``) would leave the cluster partitioned until a node restarts.
PARTITION_HANDLING = "autoheal"
# What ``rabbitmq-queues quorum_status -p / QUEUE --formatter json`` prints (a row per member), on one line;
# ``[]`` for no such queue. Numbers stay numbers, atoms (states, node names) become their names, anything
# else (a down member's ``{nodedown, Node}``) its printed term. ``queue``: the name's UTF-8 bytes, comma-separated
# (an Erlang binary of any name, no quoting).
QUORUM_STATUS = ('Text = fun(V) when is_integer(V) -> V; (V) when is_atom(V) -> atom_to_binary(V, utf8); '
                 '(V) when is_binary(V) -> V; (V) -> iolist_to_binary(io_lib:format("~p", [V])) end, '
                 'case rabbit_quorum_queue:status(<<"/">>, <<{queue}>>) of '
                 'Rows when is_list(Rows) -> io:format("~s~n", [rabbit_json:encode('
                 '[maps:from_list([{{K, Text(V)}} || {{K, V}} <- R]) || R <- Rows])]); '
                 '_ -> io:format("[]~n") end.')


def rabbitmqctl(home: str | os.PathLike, node: str, *args: str, timeout_s: float = CTL_TIMEOUT_S) -> str:
    """Run ``rabbitmqctl -n node ARGS`` with the Erlang cookie in ``home``; its stdout, or ``ClusterError``."""
    ctl = require_binary("rabbitmq-cluster", "rabbitmqctl", "rabbitmq-server", CTL)
    longnames = ["--longnames"] if "." in node.partition("@")[2] else []  # name@10.x.y.z: a node in a namespace
    env = {**os.environ, "HOME": str(home)}
    ticktime = Path(home) / TICKTIME_FILE
    if ticktime.exists():
        env["RABBITMQ_CTL_ERL_ARGS"] = ticktime_erl_args(int(ticktime.read_text()))
    try:
        done = subprocess.run([ctl, *longnames, "-n", node, *args], capture_output=True, text=True, timeout=timeout_s,
                              env=env)
    except subprocess.TimeoutExpired:
        raise ClusterError(f"rabbitmqctl {' '.join(args)} on {node} took over {timeout_s:g} s") from None
    if done.returncode != 0:
        reason = " ".join((done.stderr or done.stdout).split())[:300]
        raise ClusterError(f"rabbitmqctl {' '.join(args)} on {node} failed: {reason}")
    return done.stdout


def ticktime_erl_args(seconds: int) -> str:
    """The Erlang flag that sets the distribution's tick time, for the servers and the CLI alike."""
    return f"-kernel net_ticktime {seconds}"


class RabbitMQCluster(PrivateCluster):
    """With ``namespaces``, each node runs in a network namespace of the cluster's own (see the module
    docstring); :meth:`cut` and :meth:`heal` then cut a node off its peers and undo it. ``net_ticktime_s``:
    the Erlang distribution's tick time (a node cut off is declared down within 1.25 of it), OTP's
    60 s when None."""

    system = "rabbitmq-cluster"
    node_start_s = 90.0

    def __init__(self, run_dir, nodes: int = 3, namespaces: bool = False, net_ticktime_s: int | None = None) -> None:
        super().__init__(run_dir, nodes)
        self.namespaces = namespaces
        self.net_ticktime_s = net_ticktime_s
        self.network: NodeNetwork | None = None

    def prepare(self) -> None:
        server = require_binary(self.system, "rabbitmq-server", "rabbitmq-server", SERVER)
        require_binary(self.system, "rabbitmqctl", "rabbitmq-server", CTL)
        self.home = self.run_dir / "home"
        self.home.mkdir(parents=True, exist_ok=True)
        cookie = self.home / ".erlang.cookie"
        if not cookie.exists():
            cookie.write_text(secrets.token_hex(16).upper())
            cookie.chmod(0o400)
        erl_args = "+S 1:1"
        ticktime = self.home / TICKTIME_FILE
        if self.net_ticktime_s is None:
            ticktime.unlink(missing_ok=True)  # a cluster started before in this HOME may have left one
        else:
            ticktime.write_text(f"{self.net_ticktime_s}\n")
            erl_args += f" {ticktime_erl_args(self.net_ticktime_s)}"
        token = secrets.token_hex(3)
        if self.namespaces and self.network is None:  # (once: a start again on fresh ports keeps it)
            try:
                self.network = NodeNetwork(self.size).create(watch=self._reaper.watch_namespace)
            except NetnsError as exc:
                raise ClusterError(f"{self.system}: could not make the nodes' network namespaces: {exc}") from None
        ports = free_ports(2 * self.size) if self.network is None else []
        for i in range(1, self.size + 1):
            base = self.run_dir / f"node-{i}"
            base.mkdir(parents=True, exist_ok=True)
            (base / "enabled_plugins").write_text("[].\n")
            if self.network is None:
                host, amqp, dist, argv, own = "127.0.0.1", ports[2 * i - 2], ports[2 * i - 1], [server], {}
            else:  # the namespace is the node's own: the standard ports, and the node is named by its address
                host, amqp, dist, argv = self.network.address(i), 5672, 25672, self.network.exec_argv(i, [server])
                # The machine's rabbitmq-env.conf pins epmd and the distribution to 127.0.0.1.
                (base / "rabbitmq-env.conf").write_text("")
                own = {"RABBITMQ_USE_LONGNAME": "true", "RABBITMQ_CONF_ENV_FILE": str(base / "rabbitmq-env.conf")}
            (base / "rabbitmq.conf").write_text(f"listeners.tcp.local = {host}:{amqp}\nloopback_users = none\n"
                                                f"cluster_partition_handling = {PARTITION_HANDLING}\n")
            name = f"lq{token}-{i}@{'localhost' if self.network is None else host}"
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
                "RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS": erl_args,
                **own,
            }
            self.nodes[name] = Node(name, amqp, argv, self.run_dir / f"node-{i}.log", env, host=host)

    def release(self) -> None:
        if self.network is not None:
            made = list(self.network.created)
            self.network.destroy()
            for i in made:
                self._reaper.forget_namespace(self.network.namespace(i), self.network.host_link(i))

    def _index(self, name: str) -> int:
        return self.node_names.index(name) + 1

    def cut(self, name: str) -> None:
        """Cut node ``name`` off its peers (iptables DROP in its namespace); the launcher still reaches it."""
        self.network.cut(self._index(name))
        self.nodes[name].cut_off = True

    def heal(self, name: str) -> None:
        self.network.heal(self._index(name))
        self.nodes[name].cut_off = False

    @property
    def node_names(self) -> list[str]:
        return list(self.nodes)

    def ctl(self, node: str, *args: str, timeout_s: float = CTL_TIMEOUT_S) -> str:
        return rabbitmqctl(self.home, node, *args, timeout_s=timeout_s)

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

    def leader(self, queue: str | None = None) -> str | None:
        """The node whose member of quorum queue ``queue`` is the Raft leader (of the highest term, should two
        say so), per :meth:`members`. (The queue's record -- ``list_queues``' ``leader`` -- follows only once
        every node has seen the old leader's node go down: up to a minute when it is cut off.)"""
        members = self.members(queue) if queue is not None else {}  # no queue named, no leader to name
        leaders = sorted((m["term"] or 0, name) for name, m in members.items() if m["state"] == "leader")
        leader = leaders[-1][1] if leaders else None
        return leader if leader in self.nodes and self.nodes[leader].alive() else None

    def members(self, queue: str, ask: str | None = None) -> dict[str, dict]:
        """``{node: {"state", "term", "log_index", "commit_index"}}`` of quorum queue ``queue``'s members, as
        ``rabbitmq-queues quorum_status`` reports them, asked of node ``ask`` or else of the first live node that
        answers; a number is ``None`` where the member did not answer (its state is then ``timeout``); ``{}``
        when no node answers or there is no such queue. (One ``eval``: one CLI VM instead of the two that
        finding the queue and asking its status would start; and an ``eval`` runs on the node asked, which a
        node in a namespace can answer.)"""
        if not queue:
            raise ValueError("a RabbitMQ cluster has a leader per quorum queue: name the queue")
        name = ",".join(str(byte) for byte in queue.encode())
        for node in [ask] if ask is not None else [n.name for n in self.live_nodes()]:
            try:
                out = self.ctl(node, "eval", QUORUM_STATUS.format(queue=name), timeout_s=30.0)
            except ClusterError:
                continue
            rows = json.loads(next((line for line in out.splitlines() if line.startswith("[")), "[]"))
            break
        else:
            return {}

        def number(value):
            return value if isinstance(value, int) else None

        return {m["Node Name"]: {"state": m.get("Raft State"), "term": number(m.get("Term")),
                                 "log_index": number(m.get("Log Index")),
                                 "commit_index": number(m.get("Commit Index"))} for m in rows}
