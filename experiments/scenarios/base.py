"""What every scenario shares: parameters, the run's context, and the run template.

A scenario (one module per scenario in this package) is a subclass of :class:`Scenario`
that says whether it applies to a backend and how to inject and heal its fault. The
template :meth:`Scenario.run` is the same for all, as in Maelstrom/Jepsen: workers up,
a steady load, the fault at ``fault_start_s``, healing after ``fault_s``, then a final
drain until every produced job has taken effect (bounded by ``drain_s``).

:class:`RunContext` owns the clients a run starts: the worker processes
(``python -m experiments.worker``) and the producer (a backend instance in the runner's
process). Every client -- each worker and the producer -- reaches each server of the
topology (``Backend.topology``) through its own link in the run's proxy hub, so a fault
can cut one worker, the producer, or everyone; a cluster's node-to-node links are in the
same hub, and node faults go through the topology. The run's only output is ``events.jsonl`` (+ worker logs and the result sink);
the checker computes ``summary.json`` from the events alone.
"""
from __future__ import annotations

import contextlib
import os
import random
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, fields, replace
from pathlib import Path

from baselines import registry
from baselines.base import Backend, BackendConfig
from baselines.servers import Topology
from experiments.faults import process as procfaults
from experiments.faults.proxy import ProxyHub
from experiments.recorder import EventLog, read_jsonl
from experiments.scenarios import jobs
from experiments.scenarios.history import LiveHistory
from experiments.sinks import PostgresSink
from experiments.worker import WorkerProcess, spawn

POLL_S = 0.02


@dataclass(frozen=True)
class Work:
    """What every run's workers do: ``func`` (``MODULE:FUNCTION``) on ``payloads`` (the
    user's, taken in turn; empty: generated for the default function), effects written to
    the ``sink`` kind (``experiments.sinks``)."""

    func: str = jobs.DEFAULT_FUNCTION
    payloads: tuple[bytes, ...] = ()
    sink: str = "file"

    def setup(self, table: PostgresSink | None = None) -> dict:
        """The fields of a run's ``setup`` event (the checker copies them into summary.json)."""
        sink = table.describe() if table else {"kind": self.sink, "database": None, "table": None}
        return {"func": self.func, "sink": sink}


@dataclass(frozen=True)
class Params:
    """Scenario parameters; every field is a command-line option of ``experiments run``.

    Times are seconds. The fault starts ``fault_start_s`` after the load starts and lasts
    ``fault_s``; the load produces ``jobs`` jobs evenly over ``load_s``.
    """

    jobs: int = 200
    job_s: float = 0.05
    workers: int = 3
    heartbeat_s: float = 1.0
    timeout_s: float = 3.0
    max_attempts: int = 20
    prefetch: int = 1
    load_s: float = 8.0
    fault_start_s: float = 2.0
    fault_s: float = 8.0
    drain_s: float = 90.0
    seed: int = 0
    nemesis_s: float = 120.0

    def validate(self) -> None:
        """Raise ``ValueError`` with a one-line reason for a parameter out of range."""
        for f in fields(self):
            value = getattr(self, f.name)
            if f.name == "seed":
                continue
            if value <= 0 and f.name not in ("job_s", "fault_start_s"):
                raise ValueError(f"--{f.name.replace('_', '-')} must be > 0, got {value}")
            if value < 0:
                raise ValueError(f"--{f.name.replace('_', '-')} must be >= 0, got {value}")
        if self.workers < 2:
            raise ValueError("--workers must be at least 2: a fault takes one worker, another must redeliver")


# --quick: a small matrix for `make demo` (a few minutes for every backend and scenario).
QUICK = Params(jobs=40, job_s=0.05, workers=3, heartbeat_s=1.0, timeout_s=2.0, load_s=3.0,
               fault_start_s=1.0, fault_s=6.0, drain_s=60.0, nemesis_s=30.0)


class RunContext:
    """Everything one (backend, scenario) run starts, and the means to fault it.

    Args:
        backend: registry name.
        scenario: scenario name.
        params: the run's parameters.
        run_dir: ``OUT/<backend>/<scenario>`` (or its ``trial-<k>``), empty.
        topology: where the servers are (what the backend class gave, started; earlier runs of the
            same ``experiments run`` may have used it, see ``experiments.topologies``).
        hub: the topology's proxy hub (its node-to-node links are in it too); the run adds its
            clients' links and removes them at the end.
        on_progress: called with ``(effected, produced_target)`` while the run polls.
        work: the function, payloads and sink; a PostgreSQL sink gets a table of this run's
            own, whose rows ``close`` records as the run's ``effect`` events.
    """

    def __init__(self, backend: str, scenario: str, params: Params, run_dir: Path, topology: Topology,
                 hub: ProxyHub, on_progress: Callable[[int, int], None] | None = None, work: Work = Work()) -> None:
        self.backend_name, self.scenario_name, self.params = backend, scenario, params
        self.work = work
        self.run_dir = run_dir
        self.topology = topology
        self.on_progress = on_progress or (lambda done, total: None)
        self.backend_cls = registry.get(backend)
        self.queue = f"exp-{scenario}-{uuid.uuid4().hex[:8]}"
        topology.use_queue(self.queue)
        run_dir.mkdir(parents=True, exist_ok=True)
        self.events_path = run_dir / "events.jsonl"
        self.results_path = run_dir / "results.jsonl"
        self.log = EventLog(self.events_path)
        self.history = LiveHistory(self.events_path)
        self.sink = None if work.sink == "file" else PostgresSink.create(work.sink)
        self.log.record("setup", **work.setup(self.sink), confirms=self.backend_cls.confirms())
        self.hub = hub
        self.links: dict[str, dict[str, str]] = {}  # client -> {server: link name}
        self.workers: dict[str, WorkerProcess] = {}
        self.producer_done = threading.Event()
        self.producer_error: str | None = None
        self._producer_thread: threading.Thread | None = None
        self._stop_producer = threading.Event()
        self.t_load = 0.0
        # The seed picks, among the workers that are mid-job, the one a targeted fault hits.
        self.rng = random.Random(params.seed)

    # --- clients and their links ------------------------------------------------------

    def client_links(self, client: str) -> dict[str, str]:
        """Create (once) a proxy link per server for ``client``; returns ``{server: proxy address}``."""
        if client not in self.links:
            self.links[client] = {}
            for server, address in self.topology.servers().items():
                name = f"{client}->{server}"
                self.hub.add(name, address)
                self.links[client][server] = name
        return {server: self.hub.address(name) for server, name in self.links[client].items()}

    def link_names(self, clients=None, servers=None) -> list[str]:
        """Names of the links of ``clients`` (default all) to ``servers`` (default all)."""
        return [
            name
            for client, by_server in self.links.items() if clients is None or client in clients
            for server, name in by_server.items() if servers is None or server in servers
        ]

    def config(self, client: str) -> BackendConfig:
        """A ``BackendConfig`` for an in-process client routed through its own links."""
        p = self.params
        return BackendConfig(queue=self.queue, heartbeat_s=p.heartbeat_s, timeout_s=p.timeout_s,
                             max_attempts=p.max_attempts, prefetch=p.prefetch,
                             addresses=self.topology.config_addresses(self.client_links(client)))

    def start_worker(self, worker_id: str) -> WorkerProcess:
        """Start ``python -m experiments.worker`` as ``worker_id``, through its own links."""
        p = self.params
        env = {**os.environ, **self.topology.client_env(self.client_links(worker_id))}
        self.workers[worker_id] = spawn(
            worker_id, self.backend_name, self.queue, self.work.func, self.run_dir / f"worker-{worker_id}.log",
            events=self.events_path, heartbeat_s=p.heartbeat_s, timeout_s=p.timeout_s, max_attempts=p.max_attempts,
            prefetch=p.prefetch, env=env, harness=True,
            **({"results": self.results_path} if self.sink is None else
               {"sink": self.sink.kind, "sink_table": self.sink.table}))
        return self.workers[worker_id]

    def wait_workers_connected(self, timeout_s: float = 30.0, settle_s: float = 1.0) -> None:
        """Wait until every worker holds a connection through its links, then ``settle_s`` more.

        A worker that is still starting (importing, declaring, setting server options)
        when the load begins would see no job and could not be the target of a fault.
        """
        if not self.topology.servers():  # nothing proxied (an in-process backend): nothing to watch
            self.sleep(settle_s)
            return

        def connected() -> bool:
            return all(any(self.hub.connections(name) for name in self.link_names(clients=[w]))
                       for w in self.live_workers())

        if not self.wait_until(connected, timeout_s):
            self.note(f"not every worker had connected after {timeout_s:g} s; the load starts anyway")
        self.sleep(settle_s)

    def worker_ids(self) -> list[str]:
        return [f"w{i}" for i in range(1, self.params.workers + 1)]

    def live_workers(self) -> list[str]:
        return [w.id for w in self.workers.values() if w.alive()]

    # --- the load -----------------------------------------------------------------------

    def user_payload(self, seq: int) -> bytes:
        """What the function gets for job ``seq``: the user's payloads in turn, or generated."""
        payloads = self.work.payloads
        return payloads[seq % len(payloads)] if payloads else jobs.generated(seq, self.params.job_s)

    def payload(self, seq: int) -> bytes:
        """The job ``seq`` (an envelope of ``jobs``); scenarios override :meth:`Scenario.payload` to change one."""
        return jobs.envelope(self.user_payload(seq))

    def start_load(self, payload_of: Callable[[int], bytes]) -> None:
        """Produce ``params.jobs`` jobs evenly over ``params.load_s`` in a thread, recording ``produce``."""
        self.t_load = time.monotonic()
        self._producer_thread = threading.Thread(target=self._produce, args=(payload_of,), name="producer", daemon=True)
        self._producer_thread.start()

    def _produce(self, payload_of: Callable[[int], bytes]) -> None:
        p = self.params
        backend = None
        try:
            for seq in range(p.jobs):
                due = self.t_load + p.load_s * seq / p.jobs
                if self._stop_producer.wait(max(0.0, due - time.monotonic())):
                    return
                job_id, payload = f"j{seq:05d}", payload_of(seq)  # outside the retries: not a client error
                # A confirm lost to a fault is retried with the same id until the drain deadline;
                # a retry that the broker had in fact accepted shows up as a duplicate execution.
                while True:
                    sent = False
                    try:
                        if backend is None:
                            backend = self.backend_cls(self.config("producer"))
                            backend.connect()
                        sent = True  # from here on the broker may have the job, whatever we hear back
                        confirmed = backend.enqueue(payload, job_id=job_id)
                        self.log.produce(confirmed, seq=seq)
                        break
                    except Exception as exc:  # any client error: reconnect and retry (bounded below)
                        self.producer_error = f"{type(exc).__name__}: {exc}"
                        if sent:
                            self.log.record("enqueue_unknown", job=job_id, reason=' '.join(self.producer_error.split()))
                        if backend is not None:
                            with contextlib.suppress(Exception):  # closing a broken client
                                backend.close()
                            backend = None
                        if time.monotonic() > self.t_load + p.load_s + p.fault_s + p.drain_s:
                            self.log.record("note", text=f"producer gave up on job {job_id}: {self.producer_error}")
                            break
                        if self._stop_producer.wait(0.2):
                            return
        finally:
            if backend is not None:
                with contextlib.suppress(Exception):  # closing a broken client
                    backend.close()
            self.producer_done.set()

    # --- waiting ------------------------------------------------------------------------

    def poll(self) -> None:
        self.history.poll()
        self.on_progress(len(self.history.effected & self.history.produced), self.params.jobs)

    def wait_until(self, condition: Callable[[], bool], timeout_s: float) -> bool:
        """Poll the history until ``condition()`` or ``timeout_s``; returns whether it held."""
        deadline = time.monotonic() + timeout_s
        while True:
            self.poll()
            if condition():
                return True
            if time.monotonic() >= deadline:
                return False
            time.sleep(POLL_S)

    def sleep(self, seconds: float) -> None:
        """Wait while keeping the progress display alive."""
        self.wait_until(lambda: False, seconds)

    def drain(self) -> None:
        """Wait for the load to end and every produced job to take effect, then settle.

        "Settled" also needs every live worker idle, so that late duplicate executions
        (a slow first run finishing after the redelivery) are in the history.
        """
        p = self.params
        deadline = time.monotonic() + p.drain_s

        def done() -> bool:
            h = self.history
            return (self.producer_done.is_set() and not h.unfinished()
                    and h.in_flight(self.live_workers()) == 0)

        while time.monotonic() < deadline:
            if self.wait_until(done, deadline - time.monotonic()):
                self.sleep(min(0.5, max(0.0, deadline - time.monotonic())))
                if done():
                    return
        self.poll()
        missing = len(self.history.unfinished())
        self.log.record("note", text=f"drain stopped after {p.drain_s:g} s: {missing} produced job(s) without effect, "
                                     f"{self.history.in_flight(self.live_workers())} still running")

    # --- faults -------------------------------------------------------------------------

    def fault_start(self, fault: str, target: str, **extra) -> None:
        self.log.record("fault_start", fault=fault, target=target, **extra)

    def fault_end(self, fault: str, target: str, **extra) -> None:
        self.log.record("fault_end", fault=fault, target=target, **extra)

    def note(self, text: str) -> None:
        self.log.record("note", text=text)

    def cut(self, links: list[str], mode: str = "blackhole") -> None:
        self.hub.set_many(links, mode)

    def heal(self, links: list[str]) -> None:
        self.hub.set_many(links, "heal")

    def node_links(self, node) -> list[str]:
        """Every link that isolates topology node ``node``: to its peers and from every client."""
        return self.topology.peer_links(node) + self.link_names(servers=[self.topology.server_of(node)])

    def isolate(self, node) -> list[str]:
        """Cut topology node ``node`` off its peers and every client; returns the links cut (for :meth:`rejoin`)."""
        links = self.node_links(node)
        self.cut(links)
        self.topology.isolate(node)
        if getattr(self.topology, "isolation", ""):
            self.note(f"{self.topology.node_name(node)} isolated: {self.topology.isolation}")
        return links

    def rejoin(self, node, links: list[str]) -> None:
        """Heal what :meth:`isolate` did."""
        self.topology.rejoin(node)
        self.heal(links)

    def kill_worker(self, worker_id: str) -> None:
        procfaults.kill(self.workers[worker_id].pid)
        self.workers[worker_id].proc.wait()

    def record_sink_effects(self) -> None:
        """The PostgreSQL sink's rows, read back once every worker stopped, as ``effect`` events
        (``t``: the row's first accepted write), so the summary counts what the table holds."""
        rows = self.sink.rows()
        for row in rows:
            self.log.record("effect", job=row["job"], worker=row["worker"], t=row["t"], token=row["token"],
                            writes=row["writes"], source=self.sink.table)
        replaced = [row["job"] for row in rows if row["writes"] > 1]
        if replaced:
            self.note(f"{self.sink.kind} sink: {len(replaced)} row(s) were written again by a later holder "
                      f"(a higher token replaced a lower one's result): {', '.join(replaced[:5])}")
        self.sink.close()

    def record_backend_effects(self, backend: Backend) -> None:
        """Completions the backend holds that no worker recorded, as ``effect`` events (``source``: the backend).

        Where the accepted ack *is* the effect (``effect_on_ack``), a worker records its
        ``effect`` just after the ack was accepted, so one killed in between leaves a job
        that took effect with no event. The backend's record of completions is the system
        of record: every completed job gets its effect, and a job it does not hold stays
        lost. ``t`` is the completing attempt's ``finish`` (its ack followed), else now.
        """
        events = read_jsonl(self.events_path)
        effected = {e.get("job") for e in events if e.get("ev") == "effect"}
        finished = {(e.get("job"), e.get("attempt")): e for e in events
                    if e.get("ev") == "finish" and "error" not in e}
        found = []
        for job, attempt in backend.completions():
            if job in effected:
                continue
            finish = finished.get((job, attempt), {})
            self.log.record("effect", job=job, worker=finish.get("worker"), attempt=attempt,
                            t=finish.get("t", time.time()), source=self.backend_name)
            found.append(job)
        if found:
            self.note(f"{len(found)} completion(s) held by {self.backend_name} had no effect event (the worker died "
                      f"between the accepted ack and its record), read back as effects: {', '.join(found[:5])}")

    def pause_worker(self, worker_id: str) -> None:
        """SIGSTOP the worker: it holds its connections and jobs and runs nothing."""
        procfaults.pause(self.workers[worker_id].pid)

    def resume_worker(self, worker_id: str) -> None:
        procfaults.resume(self.workers[worker_id].pid)

    # --- teardown -----------------------------------------------------------------------

    def close(self) -> None:
        """Stop the producer and every worker, heal the proxies and remove the clients' links, delete the
        queue (the hub and the topology outlive the run)."""
        self._stop_producer.set()
        self.hub.heal_all()
        for worker in self.workers.values():
            worker.stop()
        if self._producer_thread is not None:
            self._producer_thread.join(10)
        self.hub.remove(self.link_names())
        if self.sink is not None:
            self.record_sink_effects()
        p = self.params
        backend = self.backend_cls(BackendConfig(
            queue=self.queue, heartbeat_s=p.heartbeat_s, timeout_s=p.timeout_s, max_attempts=p.max_attempts,
            addresses=self.topology.config_addresses(self.topology.servers())))
        read_back = self.sink is None and self.backend_cls.effect_on_ack  # the backend holds the effects
        try:
            backend.connect()
            if read_back:
                self.record_backend_effects(backend)
        except Exception as exc:  # the history says so; its jobs without an effect event count as lost
            if read_back:
                self.note(f"could not read the completions back from {self.backend_name}: {type(exc).__name__}: "
                          f"{' '.join(str(exc).split())}")
        # Best effort: the history is complete; a leftover queue only costs broker memory.
        with contextlib.suppress(Exception):
            try:
                backend.delete()
            finally:
                backend.close()
        self.log.close()


class Scenario:
    """A failure scenario; subclasses set ``name``/``summary`` and override the hooks.

    Hooks: :meth:`applies` (``None`` or the n/a reason), :meth:`adjust` (scenario
    defaults for parameters the user left alone), :meth:`payload`, :meth:`inject` and
    :meth:`heal` (the fault; each records ``fault_start``/``fault_end``).

    Class attributes: ``node_faults`` -- the scenario kills, restarts or isolates nodes
    of the topology, so it is ``n/a`` where the topology says it cannot;
    ``private_servers`` -- it needs servers of the run's own (it kills "the broker").
    """

    name = ""
    summary = ""
    node_faults = False
    private_servers = False

    def applies(self, backend: type[Backend]) -> str | None:
        """``None`` if the scenario applies to the backend class, else the reason it does not."""
        return None

    def adjust(self, params: Params, explicit: set[str]) -> Params:
        """Scenario-specific defaults; ``explicit`` names the parameters given on the command line."""
        return params

    def payload(self, ctx: RunContext, seq: int) -> bytes:
        return ctx.payload(seq)

    def inject(self, ctx: RunContext) -> None:
        raise NotImplementedError

    def heal(self, ctx: RunContext) -> None:
        raise NotImplementedError

    def run(self, ctx: RunContext) -> None:
        """Workers, steady load, fault, heal, drain."""
        p = ctx.params
        for worker_id in ctx.worker_ids():
            ctx.start_worker(worker_id)
        ctx.wait_workers_connected()
        ctx.start_load(lambda seq: self.payload(ctx, seq))
        ctx.sleep(max(0.0, ctx.t_load + p.fault_start_s - time.monotonic()))
        self.inject(ctx)
        self.heal(ctx)
        ctx.drain()

    def busy_worker(self, ctx: RunContext) -> str:
        """Wait (up to the load's length) until a worker is mid-job and return one (chosen by the seed).

        The fault then interrupts a job; if none is busy in time, a live worker is returned
        and a note says so.
        """
        def busy() -> list[str]:
            return sorted(w for w in ctx.live_workers() if ctx.history.busy(w))

        if ctx.wait_until(lambda: bool(busy()), ctx.params.load_s + ctx.params.timeout_s):
            return ctx.rng.choice(busy())
        worker = ctx.rng.choice(sorted(ctx.live_workers()) or ctx.worker_ids())
        ctx.note(f"no worker was mid-job when the fault began; {worker} was chosen")
        return worker


def with_defaults(params: Params, explicit: set[str], **defaults) -> Params:
    """``params`` with each of ``defaults`` applied unless the user set it explicitly."""
    return replace(params, **{k: v for k, v in defaults.items() if k not in explicit})
