"""The asyncio node: drives the Raft core over TCP with durable storage.

One loop, in the order the core's ``Ready`` requires::

    tick / step / propose  ->  ready()  ->  persist (+ one sync: group commit)
      ->  send  ->  install snapshot, apply committed entries, answer reads  ->  advance()

The persist step runs in a disk thread (``persist.Persister``); while it does, the loop
keeps ticking, decoding and stepping peer messages (as etcd's RawNode allows between
Ready and Advance), and sends only heartbeats and their answers in a term already
durable (``Raft.take_heartbeats``): large entries never silence a leader.

Peer messages are stepped as soon as they are decoded; client requests are buffered
and proposed together at the top of the next loop turn, so many requests share one
Ready, one fsync and one AppendEntries per follower. Nothing is answered before the
fsync of the Ready that committed it locally and before it is applied.

Client operations live in ``logqueue.runtime.service``; this module owns the loop.
"""
from __future__ import annotations

import asyncio
import logging
import os
import random
import time
from collections import deque
from concurrent.futures import Future
from dataclasses import dataclass, field
from pathlib import Path

from logqueue.raft import RAFT_VARIANTS, Config, Raft, SafetyError
from logqueue.raft import types as t
from logqueue.runtime import envelope, snapshot_stream, wire
from logqueue.runtime.applied_tail import AppliedTail
from logqueue.runtime.audit import HOOKS_DIR, AuditedStorage
from logqueue.runtime.backfill import Backfill
from logqueue.runtime.entry_log import EntryLog
from logqueue.runtime.machine import ServiceMachine
from logqueue.runtime.persist import LockedStorage, Persister
from logqueue.runtime.stall import StallMeter, memory_usage
from logqueue.runtime.service import Service
from logqueue.runtime.transport import Inbound, PeerLink, split_address
from logqueue.storage import DEFAULT_SEGMENT_BYTES, DiskStorage, MemoryStorage

log = logging.getLogger("logqueue.node")

# Like NATS's max_payload or RabbitMQ's max_message_size: far below the frame limit, so a
# request with one such payload always fits in a frame.
DEFAULT_MAX_PAYLOAD = 32 << 20

# Messages a leader or candidate sends; refused from anything that is not a member.
_FROM_MEMBERS_ONLY = (t.RequestVote, t.AppendEntries, t.Heartbeat, t.InstallSnapshot, t.TimeoutNow)


@dataclass
class NodeConfig:
    """Everything a node is started with (see ``logqueue node --help``)."""

    node_id: int
    listen: str
    peers: dict[int, str] = field(default_factory=dict)  # initial members (may include self)
    data_dir: str | None = None  # None: in-memory storage (tests only)
    fsync: str = "batch"
    election_timeout_ms: tuple[int, int] = (300, 600)
    heartbeat_ms: int = 50
    tick_ms: int = 10
    secret: bytes | None = None
    join: bool = False  # start empty and wait to be added by `member add`
    snapshot_every: int = 10_000  # applied entries between snapshots (at most)
    snapshot_bytes: int = 32 << 20  # ... or this many bytes of applied entries, whichever first
    retain_entries: int = 100_000  # entries kept on disk behind the latest snapshot (more if jobs need them) ...
    retain_bytes: int = 64 << 20  # ... as long as they hold at most this many bytes of data
    memory_entries: int = 1_000  # entries the Raft core keeps in memory behind its snapshot ...
    memory_bytes: int = 8 << 20  # ... as long as their data stays within this many bytes
    catch_up_bytes: int = 256 << 20  # a leader keeps more, back to its slowest streaming follower, up to this
    retention_jobs: int | None = None  # queue retention in jobs (None: the queue's default); same on every node
    segment_bytes: int = DEFAULT_SEGMENT_BYTES  # WAL segment size
    snapshot_chunk_bytes: int = snapshot_stream.DEFAULT_CHUNK_BYTES  # snapshot data per frame sent to a follower
    max_frame: int = wire.DEFAULT_MAX_FRAME
    max_payload: int = DEFAULT_MAX_PAYLOAD  # bytes of one record or job payload; larger ones are refused
    test_hooks: bool = False  # allow `isolate`; audit durability before sends (runtime/audit.py)
    test_slow_sync_ms: int = 0  # with test_hooks: a sync of new entries takes this much longer (a slow disk)
    test_slow_snapshot_ms: int = 0  # with test_hooks: a snapshot write takes this much longer
    seed: int | None = None
    raft_variant: str = "logqueue"  # a key of RAFT_VARIANTS; "paper" for election experiments only

    def raft_config(self) -> Config:
        low, high = self.election_timeout_ms
        return Config(
            election_ticks=(max(1, low // self.tick_ms), max(1, high // self.tick_ms)),
            heartbeat_ticks=max(1, self.heartbeat_ms // self.tick_ms),
            **RAFT_VARIANTS[self.raft_variant],
        )


def open_storage(cfg: NodeConfig):
    if cfg.data_dir is None:
        return MemoryStorage()
    os.makedirs(cfg.data_dir, exist_ok=True)
    return DiskStorage(cfg.data_dir, fsync=cfg.fsync, segment_bytes=cfg.segment_bytes)


def _done() -> Future:
    fut: Future = Future()
    fut.set_result(None)
    return fut


class Node:
    """A Raft node serving peers and clients on one TCP port."""

    def __init__(self, cfg: NodeConfig) -> None:
        self.cfg = cfg
        self.node_id = cfg.node_id
        self.test_hooks = cfg.test_hooks
        self.secret = cfg.secret
        self.max_frame = cfg.max_frame
        self.storage = None
        self.persister: Persister | None = None
        self._persisting = False  # a Ready is being persisted: only heartbeats may leave
        self._turn_started = 0.0  # when the loop's current stretch on the event loop began
        self.audit: AuditedStorage | None = None  # with --test-hooks and a data dir
        self.raft: Raft | None = None
        self.entry_log = EntryLog(self._stored_entries)
        self.machine = self._new_machine()
        self.service = Service(self)
        self.links: dict[int, PeerLink] = {}
        self.isolated = False  # test hook: drop all peer traffic
        self.started = time.time()
        self._server: asyncio.AbstractServer | None = None
        self._inbound: set[Inbound] = set()  # accepted connections, closed by stop()
        self._assemblers: dict[Inbound, snapshot_stream.Assembler] = {}  # peer connections sending snapshot chunks
        self._chunks_in_closed = self._largest_chunk = 0  # of the assemblers of closed connections
        self._wake = asyncio.Event()
        self._tasks: list[asyncio.Task] = []
        self.leading_term: int | None = None  # the term in which the service last took over as leader
        self._snap_index = 0  # index of the latest snapshot taken or installed
        self._snap_size = 0  # bytes of its data
        self.snapshot_saved: Future = _done()  # the disk thread's write of the latest snapshot taken
        self._applied_bytes = 0  # of entries applied since that snapshot
        self._recent_sizes: deque[int] = deque(maxlen=max(1, cfg.memory_entries))  # data bytes of the last applied
        self._tail = AppliedTail()  # where the last retain_bytes of applied entries begin
        self.stalls = StallMeter()
        # While the jobs of an installed snapshot read entries this node lacks, committed
        # entries wait here (in order) until the backfill has fetched them.
        self._held: list[t.Entry] | None = None
        self._backfill: Backfill | None = None
        self._replayed_at_start = 0
        self._refused: dict[int, float] = {}  # non-member id -> last time we logged it
        self._watchers: list[tuple[object, asyncio.Future]] = []
        self.stopped = asyncio.Event()

    def _new_machine(self, data: bytes | None = None) -> ServiceMachine:
        if data is None:
            return ServiceMachine(self.entry_log, self.cfg.retention_jobs)
        return ServiceMachine.restore(data, self.entry_log, self.cfg.retention_jobs)

    def _stored_entries(self, lo: int, hi: int) -> list[t.Entry]:
        return self.storage.entries(lo, hi)

    # --- life cycle ------------------------------------------------------------------------
    async def start(self) -> None:
        """Load state from storage, start listening and ticking."""
        cfg = self.cfg
        self.storage = open_storage(cfg)
        if cfg.test_hooks and cfg.data_dir is not None:
            self.storage = self.audit = AuditedStorage(self.storage, cfg.data_dir, cfg.test_slow_sync_ms / 1000,
                                                        cfg.test_slow_snapshot_ms / 1000)
        self.storage = LockedStorage(self.storage)  # shared with the disk thread
        self.persister = Persister(self.storage)
        state = self.storage.load()
        hard_state, snapshot, entries = state.hard_state, state.snapshot, state.entries
        if snapshot is not None and snapshot.meta.index:
            self.machine = self._new_machine(snapshot.data)
            self._snap_index, self._snap_size = snapshot.meta.index, len(snapshot.data)
        else:
            snapshot = None
        self._replayed_at_start = len(entries)  # stored entries after the snapshot: re-applied once committed
        bootstrap = None
        if not cfg.join:
            bootstrap = t.ConfState(frozenset(cfg.peers) | {cfg.node_id})
        rng = random.Random(cfg.seed if cfg.seed is not None else os.urandom(8))
        self.raft = Raft(cfg.node_id, cfg.raft_config(), rng, hard_state=hard_state, entries=entries,
                         snapshot=snapshot, bootstrap=bootstrap)
        loop = asyncio.get_running_loop()
        host, port = split_address(cfg.listen)
        self._server = await loop.create_server(self._accept, host, port, reuse_address=True)
        self._tasks = [loop.create_task(self._ticker()), loop.create_task(self._loop())]
        self._maybe_backfill()
        log.info("node %d listening on %s (term %d, last index %d, members %s, raft variant %s)", cfg.node_id,
                 cfg.listen, self.raft.term, self.raft.last_index, sorted(self.raft.conf.members()), cfg.raft_variant)

    async def stop(self) -> None:
        if self._backfill is not None:
            await self._backfill.stop()
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            try:
                await task
            except (asyncio.CancelledError, Exception):
                pass
        if self._server is not None:
            self._server.close()
        for conn in list(self._inbound):  # as a killed process would: peers see the link go
            conn.closed = True
            if conn.transport is not None:
                conn.transport.abort()
        for link in self.links.values():
            await link.close()
        self.service.fail_all("node is stopping")
        if self.persister is not None:
            self.persister.close()
        if self.storage is not None:
            self.storage.close()
        self.stalls.close()
        self.stopped.set()

    # --- addresses ---------------------------------------------------------------------------
    def address_of(self, node_id: int | None) -> str | None:
        if node_id is None:
            return None
        if node_id == self.node_id:
            return self.cfg.listen
        return self.machine.addresses.get(node_id) or self.cfg.peers.get(node_id)

    def _link(self, peer: int) -> PeerLink | None:
        link = self.links.get(peer)
        if link is None:
            address = self.address_of(peer)
            if address is None:
                return None
            link = self.links[peer] = PeerLink(self.node_id, peer, address, self.secret, self.cfg.listen,
                                               self._on_unreachable)
            link.blocked = self.isolated
            link.start()
        return link

    # --- inbound (called by transport.Inbound) --------------------------------------------
    def on_peer_frames(self, conn: Inbound, bodies: list[list]) -> None:
        if self.isolated:
            return
        raft = self.raft
        members = raft.conf.members()
        for body in bodies:
            if snapshot_stream.is_chunk(body):
                msg = self._assembler(conn).feed(body)  # FrameError closes the connection
                if msg is None:
                    continue
            else:
                msg = wire.decode_message(body)
            if msg.src != conn.peer_id or msg.dst != self.node_id:
                raise wire.FrameError(f"message from {msg.src} to {msg.dst} on the link of peer {conn.peer_id}")
            # An empty configuration means we were started to join and wait to be added.
            if members and msg.src not in members and isinstance(msg, _FROM_MEMBERS_ONLY):
                self._log_refused(msg)
                continue
            if conn.listen and msg.src not in self.cfg.peers and msg.src not in self.machine.addresses:
                self.cfg.peers[msg.src] = conn.listen  # learn how to answer a node added later
            raft.step(msg)
        self._send_heartbeats()
        self._wake.set()

    def _assembler(self, conn: Inbound) -> snapshot_stream.Assembler:
        assembler = self._assemblers.get(conn)
        if assembler is None:
            assembler = self._assemblers[conn] = snapshot_stream.Assembler()
        return assembler

    def _log_refused(self, msg: t.Message) -> None:
        now = time.monotonic()
        if now - self._refused.get(msg.src, 0) > 5:
            self._refused[msg.src] = now
            log.warning("refusing %s from node %d: not a member of %s", type(msg).__name__, msg.src,
                        sorted(self.raft.conf.members()))

    def _on_unreachable(self, peer: int) -> None:
        """The link to `peer` broke (or cannot be dialed): tell the core, as etcd's
        ReportUnreachable; a follower whose leader it was forgets it (ForgetLeader), so it
        can vote for a successor without waiting out the leader lease."""
        raft = self.raft
        raft.report_unreachable(peer)
        if raft.leader_id == peer:
            raft.forget_leader()
        self._wake.set()

    def on_client_frames(self, conn: Inbound, bodies: list[list]) -> None:
        self.service.handle(conn, bodies)
        self._wake.set()

    def _accept(self) -> Inbound:
        conn = Inbound(self)
        self._inbound.add(conn)
        return conn

    def on_close(self, conn: Inbound) -> None:
        self._inbound.discard(conn)  # its waiters are dropped when they are answered
        assembler = self._assemblers.pop(conn, None)
        if assembler is not None:
            self._chunks_in_closed += assembler.chunks
            self._largest_chunk = max(self._largest_chunk, assembler.largest)

    def wake(self) -> None:
        self._wake.set()

    # --- the loop ------------------------------------------------------------------------------
    async def _ticker(self) -> None:
        loop = asyncio.get_running_loop()
        interval = self.cfg.tick_ms / 1000
        heartbeat = self.cfg.heartbeat_ms / 1000
        deadline = loop.time()
        while True:
            deadline += interval
            await asyncio.sleep(max(0.0, deadline - loop.time()))
            now = loop.time()
            late = now - deadline
            if late > interval:
                self.stalls.late(late)
                deadline = now  # we were paused (SIGSTOP, long fsync): tick once, not a burst
            self._guarded(self.raft.tick)
            if late >= heartbeat:
                self._guarded(self.raft.heartbeat_now)  # the followers' timers did not wait for us
            self._send_heartbeats()
            self._wake.set()

    def _send_heartbeats(self) -> None:
        """While a Ready is being persisted, send the heartbeats that need nothing more durable."""
        if self._persisting:
            messages = self.raft.take_heartbeats()
            if messages:
                self._send(messages)

    async def _loop(self) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            self._turn_started = time.perf_counter()
            try:
                await self._process()
            except Exception:
                self._fatal()
                raise
            self.stalls.turn(time.perf_counter() - self._turn_started)
            await asyncio.sleep(0)  # ticks and sockets get their turn between two loop turns

    def _guarded(self, step) -> None:
        try:
            step()
        except Exception:
            self._fatal()
            raise

    def _fatal(self) -> None:
        # Storage or core failures are fatal: going on could break durability.
        log.exception("node %d stopping on an unexpected error", self.node_id)
        self.stopped.set()

    async def _persist(self, rd: t.Ready) -> None:
        """Persist ``rd`` in the disk thread; the loop's turn pauses meanwhile (no stall)."""
        self.stalls.turn(time.perf_counter() - self._turn_started)
        self._persisting = True
        try:
            await self.persister.run(rd)
        finally:
            self._persisting = False
            self._turn_started = time.perf_counter()

    async def _process(self) -> None:
        raft = self.raft
        self.service.flush_proposals()
        while raft.has_ready():
            rd = raft.ready()
            if Persister.needed(rd):
                await self._persist(rd)  # group commit: one fsync for the whole Ready, before sending
            if rd.messages:
                self._send(rd.messages)
            if rd.snapshot is not None:
                self._install(rd.snapshot)
            if rd.committed:
                if self._held is not None:
                    self._held.extend(rd.committed)
                else:
                    self._apply(rd.committed)
            if rd.read_states:
                self.service.on_read_states(rd.read_states)
            raft.advance(rd)
            self._observe_role()
        self._maybe_snapshot()
        self.service.after_apply()
        if self._watchers:
            self._check_watchers()

    def _send(self, messages: list[t.Message]) -> None:
        if self.audit is not None:
            self.audit.check_send(messages)
        # (peer, bulk) -> frames; bulk: entries and snapshots, on their own connection.
        by_peer: dict[tuple[int, bool], list[list]] = {}
        for msg in messages:
            if isinstance(msg, t.InstallSnapshot):
                by_peer.setdefault((msg.dst, True), []).extend(
                    snapshot_stream.chunk_frames(msg, self.cfg.snapshot_chunk_bytes))
                continue
            bulk = isinstance(msg, t.AppendEntries) and bool(msg.entries)
            by_peer.setdefault((msg.dst, bulk), []).append(wire.message_frame(msg))
        for (peer, bulk), frames in by_peer.items():
            link = self._link(peer)
            if link is not None:
                link.send(frames, bulk)

    def _install(self, snap: t.Snapshot) -> None:
        self.machine = self._new_machine(snap.data)
        self._snap_index, self._snap_size = snap.meta.index, len(snap.data)
        self._applied_bytes = 0
        self._held = None
        log.info("node %d installed a snapshot at index %d from the leader", self.node_id, snap.meta.index)
        self._maybe_backfill()

    def _maybe_backfill(self) -> None:
        """Fetch, from the leader, the entries behind the snapshot that retained jobs read
        and this node lacks (a follower that installed a snapshot, or restarted after a
        backfill was cut short); committed entries are held until they are stored."""
        if self.backfill_from() is None:
            return
        if self._held is None:
            self._held = []
        if self._backfill is None or self._backfill.done():
            self._backfill = Backfill(self)
            self._backfill.start()

    def backfill_from(self) -> int | None:
        """The lowest index the state machine needs that the storage lacks (None: none)."""
        needed = self.machine.needed_from()
        return needed if needed is not None and needed < self.storage.first_index() else None

    def adopt_snapshot(self, peer: int, index: int, data: bytes) -> bool:
        """Replace the state machine, behind while it backfills, by a member's newer
        snapshot at ``index`` (every member compacted the entries it needs). The held
        entries it covers are dropped: requests waiting on them are failed as retryable.
        False unless ``index`` is ahead of the machine and within the core's applied index."""
        held = self._held
        if held is None:
            return False
        state_index = held[0].index - 1 if held else self.raft.applied_index
        if not state_index < index <= self.raft.applied_index:
            return False
        self.machine = self._new_machine(data)
        self._held = [e for e in held if e.index > index]
        self.service.fail_all("the node replaced its state by a member's snapshot: retry")
        log.info("node %d took node %d's snapshot at index %d: the entries its jobs read were compacted",
                 self.node_id, peer, index)
        return True

    async def test_backfill_hold(self) -> None:
        """With test hooks: wait while the file test-hooks/hold-backfill exists."""
        if not self.cfg.test_hooks or self.cfg.data_dir is None:
            return
        hold = Path(self.cfg.data_dir) / HOOKS_DIR / "hold-backfill"
        while hold.exists():
            await asyncio.sleep(0.05)

    def backfill_done(self) -> None:
        """Called by the backfill once the storage holds everything from needed_from on."""
        held, self._held = self._held or [], None
        if held:
            self._guarded(lambda: self._apply(held))
        self._wake.set()

    def _apply(self, entries: list[t.Entry]) -> None:
        machine, service = self.machine, self.service
        for e in entries:
            self._applied_bytes += len(e.data)
            self._recent_sizes.append(len(e.data))
            self._tail.add(e.index, len(e.data))
            if e.kind is not t.EntryKind.NORMAL:
                if e.kind is t.EntryKind.CONFIG:
                    service.on_config_applied(e)
                continue
            env = service.envelope_of(e)
            if env is None:
                continue  # not written by this runtime: nothing to apply
            kind = env[0]
            if kind == envelope.RECORD:
                service.on_record_applied(*machine.apply_record(e.index, env))
            elif kind == envelope.QUEUE:
                service.on_queue_applied(machine.apply_queue(e.index, env, len(e.data)))
            else:
                machine.apply_address(env)
                link = self.links.pop(env[1], None)
                if link is not None:  # redial at the new address
                    asyncio.get_running_loop().create_task(link.close())

    def _observe_role(self) -> None:
        raft = self.raft
        term = raft.term if raft.role is t.Role.LEADER else None
        if term != self.leading_term:
            if self.leading_term is not None:
                self.service.on_leadership_lost()
            self.leading_term = term
            if term is not None:
                log.info("node %d is the leader of term %d", self.node_id, term)
                self.service.on_leadership_gained()

    def leading(self) -> bool:
        """True once this node leads and has taken stock of its log tail as leader
        (client writes are accepted from then on)."""
        raft = self.raft
        return raft.role is t.Role.LEADER and raft.term == self.leading_term

    def _maybe_snapshot(self) -> None:
        raft = self.raft
        applied = raft.applied_index
        if applied - self._snap_index < self.cfg.snapshot_every and self._applied_bytes < self.cfg.snapshot_bytes:
            return
        if self._held is None and self.snapshot_saved.done():  # one snapshot written at a time
            self.take_snapshot()

    def take_snapshot(self) -> int:
        """Snapshot the state machine at the applied index and compact the log behind it:
        the core keeps ``memory_entries`` (within ``memory_bytes``) in memory, the disk
        ``retain_entries`` (within ``retain_bytes``) and whatever retained jobs still read
        (whole segments are deleted). The loop builds the bytes; the disk thread writes them and then
        compacts the WAL (``snapshot_saved`` is done once it has).

        Raises SafetyError while a backfill holds entries back (the machine is behind)."""
        raft = self.raft
        applied = raft.applied_index
        if applied <= self._snap_index:
            return self._snap_index
        if self._held is not None:
            raise SafetyError("a backfill is under way: the state machine is behind the applied index")
        data = self.machine.snapshot()
        snap = raft.compact(applied, data, retain=min(self._memory_retain(), self.cfg.retain_entries))
        self._snap_index, self._snap_size = applied, len(data)
        self._applied_bytes = 0
        keep_from = applied - self.cfg.retain_entries
        self._tail.forget_before(keep_from)
        start = self._tail.start_of_last(self.cfg.retain_bytes)
        if start is not None:
            keep_from = max(keep_from, start - 1)
        needed = self.machine.needed_from()
        if needed is not None:
            keep_from = min(keep_from, needed - 1)
        if keep_from > 0:
            self.machine.forget_duplicates_below(keep_from)
        self.snapshot_saved = self.persister.save_snapshot(snap, keep_from)
        loop = asyncio.get_running_loop()
        self.snapshot_saved.add_done_callback(lambda fut: loop.call_soon_threadsafe(self._check_saved, fut))
        return applied

    def _check_saved(self, fut) -> None:
        if fut.exception() is not None:  # a storage failure is fatal, as in the loop
            log.error("node %d could not write its snapshot", self.node_id, exc_info=fut.exception())
            self.stopped.set()

    def _memory_retain(self) -> int:
        """How many of the last applied entries the core keeps in memory: those that fit
        ``memory_entries`` and ``memory_bytes``, and on a leader every one its slowest
        connected follower still lacks, if they fit ``catch_up_bytes``. A follower a few
        large entries behind then catches up from the log, not by a snapshot and a backfill
        of those entries' payloads (TiKV likewise keeps its log for its followers, up to a
        size limit)."""
        total = count = 0
        for size in reversed(self._recent_sizes):
            total += size
            if total > self.cfg.memory_bytes:
                break
            count += 1
        return max(min(count, self.cfg.memory_entries), self._catch_up_retain())

    def _catch_up_retain(self) -> int:
        raft = self.raft
        # A follower probed over a connection that is up is slow, not gone: the transport
        # dropped appends its unread socket held back (a paused or busy process).
        slowest = raft.slowest_follower(probing={peer for peer, link in self.links.items() if link.connected()})
        applied = raft.applied_index
        if slowest is None or slowest >= applied:
            return 0
        lo = max(slowest + 1, raft.log.first_index)
        size = sum(len(e.data) for e in raft.log.slice(lo, applied + 1))
        return applied - lo + 1 if size <= self.cfg.catch_up_bytes else 0

    # --- waiting for conditions (membership changes, transfers) ------------------------
    def watch(self, predicate) -> asyncio.Future:
        """A future resolved once ``predicate()`` is true after a loop turn."""
        fut = asyncio.get_running_loop().create_future()
        if predicate():
            fut.set_result(None)
        else:
            self._watchers.append((predicate, fut))
        return fut

    def _check_watchers(self) -> None:
        keep = []
        for predicate, fut in self._watchers:
            if fut.done():
                continue
            if predicate():
                fut.set_result(None)
            else:
                keep.append((predicate, fut))
        self._watchers = keep

    # --- status and test hooks ----------------------------------------------------------
    def status(self) -> dict:
        raft = self.raft
        role = raft.role
        wal_bytes, wal_segments = self.storage.usage()
        return {
            "id": self.node_id,
            "address": self.cfg.listen,
            "role": "candidate" if role in (t.Role.CANDIDATE, t.Role.PRE_CANDIDATE) else role.value,
            "term": raft.term,
            "campaigns": raft.campaigns,
            "leader_id": raft.leader_id,
            "leader_address": self.address_of(raft.leader_id),
            "commit_index": raft.commit_index,
            "last_index": raft.last_index,
            "applied_index": raft.applied_index,
            "first_index": self.storage.first_index(),
            "snapshot_index": self._snap_index,
            "snapshot_bytes": self._snap_size,
            "wal_bytes": wal_bytes,
            "wal_segments": wal_segments,
            "retained_offsets": self.machine.retained_offsets(),
            "backfilling": self._held is not None,
            "snapshot_chunks_received": self._chunks_in_closed + sum(a.chunks for a in self._assemblers.values()),
            "largest_snapshot_chunk": max([self._largest_chunk, *(a.largest for a in self._assemblers.values())]),
            "replayed_at_start": self._replayed_at_start,
            "longest_stall_ms": self.stalls.longest_ms(),
            "longest_turn_ms": self.stalls.longest_turn_ms(),
            "longest_gc_ms": self.stalls.longest_gc_ms(),
            "longest_gc_generation": self.stalls.longest_gc_generation,
            "longest_storage_wait_ms": round(1000 * self.storage.longest_wait, 1),
            **memory_usage(),
            "voters": sorted(raft.conf.voters),
            "outgoing": sorted(raft.conf.outgoing),
            "learners": sorted(raft.conf.learners),
            "pid": os.getpid(),
            "uptime_s": round(time.time() - self.started, 3),
            "isolated": self.isolated,
            "peers": self._peer_status(),
        }

    def _peer_status(self) -> list[dict]:
        """Each peer's links (both up, messages dropped) and, on a leader, how far it
        replicates to it (``state``: probe, replicate or snapshot; ``match``; ``next``)."""
        raft = self.raft
        progress = raft.progress if raft.role is t.Role.LEADER else {}
        rows = []
        for peer in sorted(set(self.links) | set(progress)):
            link, pr = self.links.get(peer), progress.get(peer)
            row = {"id": peer, "connected": link is not None and link.connected(),
                   "dropped": link.dropped if link is not None else 0}
            if pr is not None:
                row |= {"state": pr.state.value, "match": pr.match, "next": pr.next}
            rows.append(row)
        return rows

    def set_isolated(self, on: bool) -> None:
        """Test hook: drop every peer message in and out (a node cut off the network)."""
        self.isolated = on
        for link in self.links.values():
            link.blocked = on
