"""The servers of one ``experiments run``: each backend's topology started once and reused by its cells.

A cell (backend x scenario x trial) runs on the topology its backend class gives
(``Backend.topology``), behind a :class:`~experiments.faults.proxy.ProxyHub` that carries
the clients' links and the cluster's own peer links. Starting a cluster takes seconds to
tens of seconds, so :class:`Topologies` starts each one for the first cell that needs it
and hands the same topology and hub to the backend's later cells; the runner closes a
backend's topologies after its last cell, and all of them on the way out (Ctrl-C,
SIGTERM, an error). A SIGKILLed runner leaves nothing either: the topologies' processes
die with it (``baselines.servers.nodes.Reaper``, ``logqueue.lifetime``).

Which topology a cell gets, keyed by what its scenario needs: the backend's default one
(``cls.topology()``: the shared servers of the machine, or for logqueue and the
replicated baselines a cluster of the run's own), except for a scenario that needs
servers of its own (``Scenario.private_servers``: ``broker-restart`` kills "the broker")
on a backend whose default is shared servers: that cell gets the backend's private
topology (``cls.topology(private=True)``: a private server), also started once and shared
by the run's other cells that need one. So a single-node backend runs its other cells on
the shared servers, as each cell always did, and no cell of it pays for a private server
it does not kill; a clustered backend has one cluster for every scenario.

Between two cells, :meth:`Topologies.prepare` calls ``Topology.recover``: every link of
the hub healed, every paused node continued, every dead node (a leader a scenario killed
and left down, a restart that failed) started again on its data, and the topology ready
(every node serving, a leader) before the next cell starts; each cell has its own queue
(``RunContext`` makes one and deletes it at the end), its own client links (removed at
its end) and its own ``cluster.jsonl`` timeline. A topology that cannot be recovered is
stopped, and the next cell that needs it starts a fresh one. A started topology's data
and logs are in ``<backend>[-private]/`` under the run's servers directory: ``OUT/.servers``
(hidden: no cell there), or ``--servers-dir`` (the demo gives each of its cells its own).
"""
from __future__ import annotations

import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from baselines.base import Backend
from baselines.servers import Topology
from experiments.faults.proxy import ProxyHub

SERVERS_DIR = ".servers"


@dataclass
class Started:
    """A started topology, its hub, and what the cells on it note."""

    topology: Topology
    hub: ProxyHub
    first: str  # the cell it was started for
    seconds: float | None  # how long it took to start and become ready (None: nothing was started)
    last: str = ""  # the cell that ran on it last

    def close(self) -> None:
        try:
            self.topology.close()
        finally:
            self.hub.close()


class Topologies:
    """The run's started topologies, ``{(backend, private): Started}``.

    Args:
        root: the directory (absolute) in which each started topology keeps its files, one
            directory per topology (a run's is ``OUT/.servers``).
        external: ``{server: addresses}`` of servers the user runs (``--logqueue-cluster``).
        announce: prints one line (each topology's start time, once).
    """

    def __init__(self, root: Path, external: dict[str, str], announce: Callable[[str], None] = print) -> None:
        self.root, self.external, self.announce = root, external, announce
        self.started: dict[tuple[str, bool], Started] = {}

    def key(self, cls: type[Backend], scenario) -> tuple[str, bool]:
        """``(backend, private)``: private only where the scenario kills the broker and the backend's default
        topology is servers the run may not kill (see the module docstring)."""
        if not scenario.private_servers:
            return cls.name, False
        started = self.started.get((cls.name, False))
        default = started.topology if started else cls.topology(private=False, external=self.external)
        return cls.name, default.node_faults is not None

    def topology(self, cls: type[Backend], scenario) -> Topology:
        """The topology the cell runs on: the started one of its key, else a new, unstarted one."""
        key = self.key(cls, scenario)
        if key in self.started:
            return self.started[key].topology
        return cls.topology(private=key[1], external=self.external)

    def prepare(self, cls: type[Backend], scenario, topology: Topology, cell: str,
                watch: Callable[[], None] = lambda: None) -> tuple[ProxyHub, list[str]]:
        """Start ``topology`` (the cell is the first on it) or recover it after the previous cell; returns
        its hub and the cell's notes about it. ``watch`` is called once the topology's processes run,
        before it is ready or recovered (the cell's ``cluster.jsonl`` begins there, so the first cell's
        has the first election). On an error the topology is stopped and forgotten."""
        key = self.key(cls, scenario)
        started = self.started.get(key)
        try:
            if started is None:
                started, restarted = self._start(key, topology, cell, watch), []
            else:
                watch()
                restarted = topology.recover()
        except BaseException:
            self._close(key, started)
            raise
        notes = []
        if started.seconds is not None:
            everything = topology.everything
            reuse = "the run's later cells that need it reuse it" if started.first == cell else (
                f"this cell reuses it" + (f", after the runner restarted {', '.join(restarted)} (down after "
                                         f"{started.last})" if restarted else ""))
            notes = [f"the {everything} started in {started.seconds:.1f} s",
                     f"the {everything} was started once for the run, for {started.first}; {reuse}"]
        started.last = cell
        return started.hub, notes

    def _start(self, key: tuple[str, bool], topology: Topology, cell: str, watch: Callable[[], None]) -> Started:
        backend, private = key
        hub = ProxyHub()
        started = Started(topology, hub, cell, None)
        t0 = time.monotonic()
        own = topology.node_faults is None  # processes of the run's own, with files (else: nothing to start)
        try:
            run_dir = self.root / (backend + ("-private" if private else ""))
            if own:
                shutil.rmtree(run_dir, ignore_errors=True)
                run_dir.mkdir(parents=True)
            topology.start(run_dir, hub)
            watch()
            topology.ready()
        except BaseException:
            started.close()
            raise
        if own:
            started.seconds = time.monotonic() - t0
            self.announce(f"{backend}: the {topology.everything} started in {started.seconds:.1f} s")
        self.started[key] = started
        return started

    def _close(self, key, started: Started | None) -> None:
        self.started.pop(key, None)
        if started is not None:
            started.close()

    def __enter__(self) -> "Topologies":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self, backend: str | None = None) -> None:
        """Stop the topologies of ``backend`` (default: all)."""
        for key in [k for k in self.started if backend is None or k[0] == backend]:
            self._close(key, self.started[key])
