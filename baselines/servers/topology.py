"""A run's topology: where a backend's servers are, and the node faults it supports.

The runner asks the backend class for one (``Backend.topology``) and never looks at the
backend's name. This base serves the shared brokers of the machine: their addresses come
from the ``LOGQUEUE_*_URL`` variables, and a run may not kill or cut off their nodes
(``node_faults`` says so; a scenario that needs node faults reports ``n/a`` with it).
A private server (:mod:`baselines.servers.private`) or a cluster
(:mod:`baselines.servers.logqueue_cluster`) overrides what it can do.

Node faults work on ``nodes`` (ids; ``node_name`` is how events name them): ``kill``
(SIGKILL and reap), ``pause``/``resume`` (SIGSTOP/SIGCONT), ``restart`` (kill, then
``spawn`` on the same data), and isolation: ``peer_links(node)`` are the links between a
node and its peers in the run's proxy hub, ``server_of(node)`` the server name the
clients' links to it go by; cutting both isolates the node, healing them heals it.
``leader()`` is found through the system's own API.

Links: ``start(run_dir, links)`` gets the run's proxy hub, an object with
``add(name, target, admit=None)``, ``address(name)``, ``set_many(names, mode)`` and
``heal_all()``; a cluster puts its node-to-node links there, so one hub carries every fault.

Reuse: one started topology serves several runs (the runner's cells) one after the
other. Each run names its work queue with ``use_queue`` first (a system with a leader per
queue reports that queue's), and :meth:`Topology.recover` undoes whatever the previous
run's faults left (a killed node, a paused one, a cut link) before the next run starts.
"""
from __future__ import annotations

import os
import signal
import subprocess
import time
from collections.abc import Callable, Sequence
from pathlib import Path

SHARED_NODE_FAULTS = ("the shared servers ({servers}) are not this run's processes: a run may not kill them "
                      "or cut them off their peers")


class ServerStartError(RuntimeError):
    """A private server or cluster could not be started (one-line reason)."""


class Topology:
    """The shared servers ``servers`` (``baselines.servers.Server``); subclasses start their own.

    Attributes:
        nodes: the node ids a node fault may target (none for shared servers).
        node_faults: ``None`` when every node fault works, else the one line why not.
        everything: how fault events name the whole server side ("broker", "cluster").
        lag_unit: what ``catching_up`` counts how far a node is behind in.
    """

    everything = "broker"
    lag_unit = "entries"

    def __init__(self, servers: Sequence = (), node_faults: str | None = None) -> None:
        self.shared = tuple(servers)
        self.nodes: list = []
        self.node_faults = node_faults or SHARED_NODE_FAULTS.format(
            servers=", ".join(s.name for s in self.shared) or "none")
        self.links = None
        self.queue: str | None = None  # the current run's work queue (see use_queue)

    # --- lifecycle ----------------------------------------------------------------------

    def start(self, run_dir: Path, links=None) -> None:
        """Start what the topology needs (nothing for shared servers); ``links`` is the run's proxy hub."""
        self.links = links

    def ready(self, timeout_s: float = 15.0) -> None:
        """Return once the servers serve (a cluster: has a leader); ``ServerStartError`` after ``timeout_s``."""

    def close(self) -> None:
        """Stop whatever the topology started (nothing for shared servers). Safe to call twice."""

    def recover(self, timeout_s: float = 60.0) -> list[str]:
        """Between two runs on the started servers: heal every link of the hub, undo every node's
        isolation (:meth:`rejoin`), SIGCONT every running node, start every node that is down again on
        its data, then :meth:`ready`; returns the names of the nodes started again. Safe when nothing
        needs doing (shared servers: only the links)."""
        if self.links is not None:
            self.links.heal_all()
        restarted = []
        for node in self.nodes:
            self.rejoin(node)  # a no-op for a node that is not isolated
            if self.process(node).poll() is None:
                self.resume(node)  # a no-op for a node that is not stopped
            else:
                self.spawn(node)
                restarted.append(self.node_name(node))
        self.ready(timeout_s)
        return restarted

    def use_queue(self, queue: str) -> None:
        """The next run's work queue is ``queue``: the one whose leader :meth:`leader` names."""
        self.queue = queue

    # --- what clients see ---------------------------------------------------------------

    def servers(self) -> dict[str, str]:
        """``{server: real host:port}``: one proxy link per client goes to each."""
        from baselines.base import host_port

        return {s.name: host_port(os.environ.get(s.env) or s.default) for s in self.shared}

    def client_env(self, links: dict[str, str]) -> dict[str, str]:
        """Environment variables that point a worker process at ``links`` (``{server: proxy}``)."""
        return {s.env: links[s.name] for s in self.shared if s.name in links}

    def config_addresses(self, links: dict[str, str]) -> dict[str, str]:
        """``BackendConfig.addresses`` for an in-process client (the producer) using ``links``."""
        return {name: address for name, address in links.items() if name in self.servers()}

    def timeline_addresses(self) -> dict[int, str]:
        """Nodes whose Raft status ``cluster.jsonl`` records, ``{id: own address}`` (none here)."""
        return {}

    # --- nodes --------------------------------------------------------------------------

    def node_name(self, node) -> str:
        return f"node-{node}"

    def server_of(self, node) -> str:
        """The server name of the clients' links to ``node``."""
        return self.node_name(node)

    def peer_links(self, node) -> list[str]:
        """The hub's links into or out of ``node`` from its peers (none for a single server)."""
        return []

    def leader(self):
        """The node that leads the queue, by the system's own account, or ``None``."""
        return None

    def wait_leader(self, timeout_s: float, exclude=None):
        """The leader once there is one (other than ``exclude``); ``RuntimeError`` after ``timeout_s``."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            leader = self.leader()
            if leader is not None and leader != exclude:
                return leader
            time.sleep(0.05)
        raise RuntimeError(f"no leader{'' if exclude is None else f' other than {self.node_name(exclude)}'} "
                           f"within {timeout_s:g} s")

    def catching_up(self, node) -> tuple[int | None, Callable[[], bool]]:
        """``(how far node is behind, in lag_unit; a predicate true once its data has caught up with the
        leader's of now)``; ``(None, always)`` where unknown."""
        return None, lambda: True

    # --- node faults --------------------------------------------------------------------

    def process(self, node) -> subprocess.Popen:
        """The process of ``node``."""
        raise NotImplementedError(self.node_faults)

    def spawn(self, node) -> int:
        """Start ``node`` (again, on its data); returns its PID."""
        raise NotImplementedError(self.node_faults)

    def kill(self, node) -> None:
        """SIGKILL ``node`` and reap it: a crash, with no chance to clean up."""
        proc = self.process(node)
        if proc.poll() is None:
            proc.kill()
        proc.wait()

    def pause(self, node) -> None:
        """SIGSTOP ``node``: it keeps its sockets open and runs nothing."""
        self._signal(node, signal.SIGSTOP)

    def resume(self, node) -> None:
        self._signal(node, signal.SIGCONT)

    def restart(self, node) -> int:
        """Kill ``node`` and start it again on its data; returns the new PID."""
        self.kill(node)
        return self.spawn(node)

    def isolate(self, node) -> None:
        """What cutting ``node``'s links (``peer_links`` and the clients') leaves to do to cut it off (nothing here)."""

    def rejoin(self, node) -> None:
        """Undo :meth:`isolate` (before the links are healed)."""

    def _signal(self, node, sig: signal.Signals) -> None:
        proc = self.process(node)
        if proc.poll() is None:
            os.kill(proc.pid, sig)
