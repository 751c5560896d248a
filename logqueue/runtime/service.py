"""Client operations of a node: what each request does and when it is answered.

Requests (``[REQUEST, id, op, args]``) and their answers:

==============  =====================================================  ==========================
op              args                                                   answer body
==============  =====================================================  ==========================
append          c (client id), low, recs: [[seq, data], ...]           {"indexes": [...]}
submit          c, seq, low, cmds: [command, ...]                      {"results": [...]}
query           name, args, stale (bool)                               the query's answer
status          --                                                     the node's status map
read_log        from, max, all (bool), consistency                     {"entries": [...], ...}
member          op ("add"|"learner"|"promote"|"remove"), id, address   {"voters", "learners"}
transfer        to                                                     {"leader": id}
snapshot        --                                                     {"index": I}
fetch_entries   from, to, max_bytes                                    {"entries": [[i, term, kind, data]],
                                                                        "first_index": F}
fetch_snapshot  --                                                     {"index": I, "data": bytes}
isolate         on (bool) -- only with --test-hooks                    {"isolated": bool}
==============  =====================================================  ==========================

Errors are ``ok = false`` with ``{"code", "message"}``; ``not_leader`` adds ``leader`` and
``address`` so the client can follow the redirect. Writes and linearizable queries are
served by the leader only. A write is answered once applied; a retried write (same
client id and seq) is never proposed twice while the first copy is in the leader's log,
and is applied at most once (``machine.ServiceMachine``).
"""
from __future__ import annotations

import asyncio
import base64
import logging
import time
from typing import TYPE_CHECKING, Any, Callable, Protocol

from logqueue.packing import LARGE
from logqueue.raft import NotLeader, ProposalDropped, Raft, SafetyError
from logqueue.raft import types as t
from logqueue.runtime import envelope, wire
from logqueue.runtime.backfill import CHUNK_BYTES, entry_rows
from logqueue.runtime.machine import ServiceMachine, StaleRequest
from logqueue.storage.base import Storage

if TYPE_CHECKING:
    from logqueue.runtime.transport import Inbound

log = logging.getLogger("logqueue.service")

MAX_GROUPS_PER_ENTRY = 1024
# Payload bytes proposed per loop turn (at least one request): the fsync of one turn stays
# short, so the loop keeps sending heartbeats while large payloads stream in.
PROPOSAL_BYTES_PER_TURN = 8 << 20
# Answers to one connection from one applied entry are joined into one write up to this size.
JOIN_BYTES = 256 << 10


def _take(items: list, size, budget: int) -> tuple[list, list]:
    """(the longest prefix of ``items`` within ``budget`` bytes, at least one item; the rest)."""
    total = 0
    for k, item in enumerate(items):
        total += size(item)
        if total > budget and k > 0:
            return items[:k], items[k:]
    return items, []


def _group_bytes(group: list) -> int:
    return sum(len(cmd["payload"]) for cmd in group[3] if isinstance(cmd, dict) and isinstance(cmd.get("payload"), bytes))
READ_LOG_MAX = 10_000
# A linearizable log read waits at most this long for its read index (one heartbeat round
# to a quorum, via the leader for a follower); then it is answered "timeout" to be retried.
READ_INDEX_TIMEOUT_S = 2.0
QUEUE_QUERIES = ("read", "stats", "results", "dead_letters", "queue_names")


class BadRequest(ValueError):
    """A request with missing or mistyped arguments; answered with code bad_request."""


class PayloadTooLarge(BadRequest):
    """A record or job payload above the node's --max-payload-bytes; code payload_too_large."""


def check_payload(size: int, limit: int) -> None:
    if size > limit:
        raise PayloadTooLarge(f"a payload of {size} bytes exceeds this node's maximum of {limit} bytes "
                              "(--max-payload-bytes)")


def error(code: str, message: str, **extra) -> dict:
    return {"code": code, "message": message, **extra}


def _arg(args: dict, name: str, kind: type | tuple, default: Any = ...) -> Any:
    if name not in args:
        if default is ...:
            raise BadRequest(f"missing argument {name!r}")
        return default
    value = args[name]
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        raise BadRequest(f"argument {name!r} has the wrong type")
    return value


class _Pending:
    """One client request waiting for several answers (one per record or group)."""

    __slots__ = ("conn", "rid", "answers", "remaining", "key", "done")

    def __init__(self, conn: "Inbound", rid: int, n: int, key: str) -> None:
        self.conn, self.rid, self.key = conn, rid, key
        self.answers: list[Any] = [None] * n
        self.remaining = n
        self.done = False

    def set(self, k: int, answer: Any, out: dict | None = None) -> None:
        """Record answer ``k``; the response goes out with the last one (into ``out``,
        ``{conn: [frame, ...]}``, when given: the caller writes each connection's at once)."""
        if self.done:
            return
        if answer is None:
            self.fail(error("stale_request", "the answer to this retried request was already acknowledged"))
            return
        self.answers[k] = answer
        self.remaining -= 1
        if self.remaining == 0:
            self.done = True
            # "indexes": one answer per record; "results": the one group's command results.
            body = self.answers if self.key == "indexes" else self.answers[0]
            response = wire.response(self.rid, True, {self.key: body})
            if out is None:
                self.conn.send(response)
            else:
                out.setdefault(self.conn, []).append(wire.frame(response))

    def fail(self, body: dict) -> None:
        if not self.done:
            self.done = True
            self.conn.send(wire.response(self.rid, False, body))


class NodeHandle(Protocol):
    """What the service needs of its node (``runtime.node.Node``); the node owns the loop,
    the core, the storage and the state machine, the service only reads and drives them."""

    node_id: int
    raft: Raft
    storage: Storage
    machine: ServiceMachine
    isolated: bool
    test_hooks: bool

    def leading(self) -> bool: ...
    def address_of(self, node_id: int | None) -> str | None: ...
    def status(self) -> dict: ...
    def take_snapshot(self) -> int: ...
    def set_isolated(self, on: bool) -> None: ...
    def wake(self) -> None: ...
    def watch(self, predicate: Callable[[], bool]) -> asyncio.Future: ...


class Service:
    """The client-facing half of a node (the loop calls the ``on_*`` hooks)."""

    def __init__(self, node: NodeHandle) -> None:
        self.node = node
        # Leader only: requests in the log tail or in the buffer, not yet applied.
        self.inflight: set[tuple[int, int]] = set()
        self.record_waiters: dict[tuple[int, int], list[tuple[_Pending, int]]] = {}
        self.queue_waiters: dict[tuple[int, int], list[tuple[_Pending, int]]] = {}
        self.buf_records: list[tuple[tuple[int, int], bytes]] = []  # (key, entry data)
        self.buf_groups: list[list] = []
        self.reads: dict[int, tuple["Inbound", int, str, dict]] = {}  # read request id -> query
        self.ready_reads: list[tuple[int, "Inbound", int, str, dict]] = []  # (index, ...) awaiting apply
        self._read_seq = 0
        self.log_reads: dict[int, asyncio.Future] = {}  # read request id -> its read index
        # Leader only: index -> (term, envelope) of the entries it proposed with large payloads.
        self.proposed: dict[int, tuple[int, list]] = {}
        self.ops = {
            "append": self.op_append,
            "submit": self.op_submit,
            "query": self.op_query,
            "status": self.op_status,
            "status_leader": self.op_status_leader,
            "read_log": self.op_read_log,
            "member": self.op_member,
            "transfer": self.op_transfer,
            "snapshot": self.op_snapshot,
            "fetch_entries": self.op_fetch_entries,
            "fetch_snapshot": self.op_fetch_snapshot,
            "isolate": self.op_isolate,
        }

    # --- dispatch ------------------------------------------------------------------------
    def handle(self, conn: "Inbound", bodies: list[list]) -> None:
        for body in bodies:
            rid, op, args = wire.decode_request(body)  # FrameError closes the connection
            handler = self.ops.get(op)
            try:
                if handler is None:
                    raise BadRequest(f"unknown operation {op!r}")
                handler(conn, rid, args)
            except PayloadTooLarge as exc:
                conn.send(wire.response(rid, False, error("payload_too_large", str(exc))))
            except BadRequest as exc:
                conn.send(wire.response(rid, False, error("bad_request", str(exc))))
            except NotLeader:
                conn.send(wire.response(rid, False, self.not_leader()))
            except Exception as exc:  # a bug must cost one request, never the node
                log.exception("request %s failed", op)
                conn.send(wire.response(rid, False, error("internal", f"{exc.__class__.__name__}: {exc}")))

    def not_leader(self) -> dict:
        node = self.node
        leader = node.raft.leader_id
        if leader == node.node_id:
            leader = None
        return error("not_leader", f"node {node.node_id} is not the leader", leader=leader,
                     address=node.address_of(leader))

    def _require_leader(self) -> None:
        # Not raft.role alone: between winning an election and the loop turn that runs
        # on_leadership_gained, a retried write could be proposed a second time.
        if not self.node.leading():
            raise NotLeader(self.node.raft.leader_id)

    # --- writes ----------------------------------------------------------------------------
    def op_append(self, conn, rid, args) -> None:
        self._require_leader()
        c = _arg(args, "c", int)
        low = _arg(args, "low", int, 0)
        recs = _arg(args, "recs", list)
        machine = self.node.machine
        pending = _Pending(conn, rid, len(recs), "indexes")
        for k, rec in enumerate(recs):
            if type(rec) is not list or len(rec) != 2 or type(rec[0]) is not int or type(rec[1]) is not bytes:
                raise BadRequest("each record must be [seq, bytes]")
            check_payload(len(rec[1]), self.node.cfg.max_payload)
        if not recs:
            pending.done = True
            conn.send(wire.response(rid, True, {"indexes": []}))
            return
        for k, (seq, data) in enumerate(recs):
            key = (c, seq)
            try:
                done, answer = machine.answer(c, seq)
            except StaleRequest as exc:
                pending.fail(error("stale_request", str(exc)))
                return
            if done:
                pending.set(k, answer)
                continue
            self.record_waiters.setdefault(key, []).append((pending, k))
            if key not in self.inflight:
                self.inflight.add(key)
                self.buf_records.append((key, envelope.record(c, seq, low, data)))

    def op_submit(self, conn, rid, args) -> None:
        self._require_leader()
        c = _arg(args, "c", int)
        seq = _arg(args, "seq", int)
        low = _arg(args, "low", int, 0)
        cmds = _arg(args, "cmds", list)
        for cmd in cmds:
            if isinstance(cmd, dict) and isinstance(cmd.get("payload"), bytes):
                check_payload(len(cmd["payload"]), self.node.cfg.max_payload)
        key = (c, seq)
        pending = _Pending(conn, rid, 1, "results")
        try:
            done, answer = self.node.machine.answer(c, seq)
        except StaleRequest as exc:
            pending.fail(error("stale_request", str(exc)))
            return
        if done:
            pending.set(0, answer)
            return
        self.queue_waiters.setdefault(key, []).append((pending, 0))
        if key not in self.inflight:
            self.inflight.add(key)
            self.buf_groups.append([c, seq, low, cmds])

    def flush_proposals(self) -> None:
        """Propose what was buffered since the last loop turn, as few entries as possible, up to
        ``PROPOSAL_BYTES_PER_TURN`` of payload; the rest waits for the next turns."""
        if not (self.buf_records or self.buf_groups):
            return
        node = self.node
        records, self.buf_records = _take(self.buf_records, lambda r: len(r[1]), PROPOSAL_BYTES_PER_TURN)
        budget = PROPOSAL_BYTES_PER_TURN - sum(len(data) for _, data in records)
        groups: list = []
        if budget > 0 or not records:
            groups, self.buf_groups = _take(self.buf_groups, _group_bytes, budget)
        if self.buf_records or self.buf_groups:
            node.wake()  # the rest goes in the next turns
        try:
            if records:
                node.raft.propose_batch([data for _, data in records])
                records = []
            if groups:
                # The leader's stamp never goes back, even across leaders.
                now_ms = max(int(time.time() * 1000), node.machine.stamp)
                batches = [groups[i : i + MAX_GROUPS_PER_ENTRY] for i in range(0, len(groups), MAX_GROUPS_PER_ENTRY)]
                sizes = [sum(map(_group_bytes, b)) for b in batches]
                first = node.raft.propose_batch([envelope.queue_batch(now_ms, b, n) for b, n in zip(batches, sizes)])
                for k, (b, n) in enumerate(zip(batches, sizes)):
                    if n >= LARGE:
                        self.proposed[first + k] = (node.raft.term, [envelope.QUEUE, now_ms, b])
        except NotLeader:
            self.on_leadership_lost()
        except ProposalDropped as exc:
            # A leadership transfer is under way: what was not proposed is refused (the
            # clients retry at the new leader); what is in the log stays tracked.
            body = error("unavailable", str(exc))
            for key, _ in records:
                self._fail_key(key, self.record_waiters, body)
            for g in groups:
                self._fail_key((g[0], g[1]), self.queue_waiters, body)

    def _fail_key(self, key, waiters: dict, body: dict) -> None:
        self.inflight.discard(key)
        for pending, _ in waiters.pop(key, ()):
            pending.fail(body)

    # --- apply hooks (called by the node loop) ------------------------------------------
    def envelope_of(self, e: t.Entry) -> list | None:
        """The envelope of an entry being applied (None: not one of ours). A leader's own
        entry with large payloads is taken as it proposed it -- the same index and term are
        the same entry (Log Matching) -- rather than decoded: that would copy its payloads
        once more on the loop."""
        own = self.proposed.pop(e.index, None) if self.proposed else None
        if own is not None and own[0] == e.term:
            return own[1]
        return envelope.decode(e.data)

    def on_record_applied(self, client_id: int, seq: int, answer: int | None) -> None:
        key = (client_id, seq)
        if self.inflight:
            self.inflight.discard(key)
        waiters = self.record_waiters.pop(key, None)
        if waiters:
            for pending, k in waiters:
                pending.set(k, answer)

    def on_queue_applied(self, outcomes: list[tuple[int, int, Any]]) -> None:
        # One write per connection for the entry (consumers sharing a client share one).
        replies: dict["Inbound", list[bytes]] = {}
        for client_id, seq, answer in outcomes:
            key = (client_id, seq)
            self.inflight.discard(key)
            for pending, k in self.queue_waiters.pop(key, ()):
                pending.set(k, answer, replies)
        for conn, frames in replies.items():
            if len(frames) > 1 and sum(map(len, frames)) <= JOIN_BYTES:
                frames = [b"".join(frames)]
            for data in frames:  # large answers (claimed payloads) are written as they are, never copied
                conn.send_bytes(data)

    def on_config_applied(self, entry: t.Entry) -> None:
        conf = t.ConfState.decode(entry.data)
        log.info("node %d applied configuration %s at index %d", self.node.node_id,
                 f"{sorted(conf.voters)} (joint with {sorted(conf.outgoing)})" if conf.joint else sorted(conf.voters),
                 entry.index)

    def after_apply(self) -> None:
        """Answer linearizable reads whose read index is now applied."""
        if not self.ready_reads:
            return
        applied = self.node.raft.applied_index
        keep = []
        for item in self.ready_reads:
            if item[0] <= applied:
                self._answer_query(*item[1:])
            else:
                keep.append(item)
        self.ready_reads = keep

    def on_read_states(self, states: list[t.ReadState]) -> None:
        for rs in states:
            fut = self.log_reads.pop(rs.request, None)
            if fut is not None and not fut.done():
                fut.set_result(rs.index)
            q = self.reads.pop(rs.request, None)
            if q is not None:
                self.ready_reads.append((rs.index, *q))

    def on_leadership_gained(self) -> None:
        # Requests already in our log tail (from an earlier leader) must not be proposed
        # again when their client retries: they will be committed by this leader.
        node = self.node
        lo, hi = node.raft.applied_index + 1, node.raft.last_index + 1
        if lo >= hi:
            return
        for e in node.storage.entries(lo, hi):
            if e.kind is not t.EntryKind.NORMAL:
                continue
            env = envelope.decode(e.data)
            if env is None:
                continue
            if env[0] == envelope.RECORD:
                self.inflight.add((env[1], env[2]))
            elif env[0] == envelope.QUEUE:
                for c, seq, _low, _cmds in env[2]:
                    self.inflight.add((c, seq))

    def on_leadership_lost(self) -> None:
        self.fail_all(None)

    def fail_all(self, reason: str | None) -> None:
        body = self.not_leader() if reason is None else error("unavailable", reason)
        for waiters in (self.record_waiters, self.queue_waiters):
            for lst in waiters.values():
                for pending, _ in lst:
                    pending.fail(body)
            waiters.clear()
        for conn, rid, _, _ in self.reads.values():
            conn.send(wire.response(rid, False, body))
        for _, conn, rid, _, _ in self.ready_reads:
            conn.send(wire.response(rid, False, body))
        self.reads.clear()
        self.ready_reads.clear()
        self.inflight.clear()
        self.proposed.clear()
        self.buf_records.clear()
        self.buf_groups.clear()

    # --- reads ---------------------------------------------------------------------------
    def op_query(self, conn, rid, args) -> None:
        name = _arg(args, "name", str)
        qargs = _arg(args, "args", dict, {})
        if name not in QUEUE_QUERIES:
            raise BadRequest(f"unknown query {name!r}; known: {', '.join(QUEUE_QUERIES)}")
        if _arg(args, "stale", bool, False):
            self._answer_query(conn, rid, name, qargs)
            return
        self._require_leader()
        self._read_seq += 1
        self.reads[self._read_seq] = (conn, rid, name, qargs)
        self.node.raft.read_index(self._read_seq)

    def _answer_query(self, conn, rid, name: str, qargs: dict) -> None:
        try:
            answer = getattr(self.node.machine.queue, name)(**qargs)
        except (TypeError, ValueError, KeyError) as exc:
            conn.send(wire.response(rid, False, error("bad_request", f"query {name}: {exc}")))
            return
        conn.send(wire.response(rid, True, answer), large=name == "read")  # "read" answers carry payloads

    def op_status(self, conn, rid, args) -> None:
        conn.send(wire.response(rid, True, self.node.status()))

    def op_status_leader(self, conn, rid, args) -> None:
        self._require_leader()
        conn.send(wire.response(rid, True, self.node.status()))

    def op_read_log(self, conn, rid, args) -> None:
        """Committed (applied) entries of this node from `from`, at most `max`.

        consistency "committed" (default): what this node has applied, possibly behind
        the leader (a stale read). "linearizable": first obtain a read index (ReadIndex
        at the leader; a follower asks its leader, Raft §6.4), wait until this node has
        applied it, then read -- every append acknowledged before the read began is in."""
        consistency = _arg(args, "consistency", str, "committed")
        if consistency == "committed":
            self._send_log_page(conn, rid, args)
        elif consistency == "linearizable":
            self._read_seq += 1
            request = self._read_seq
            self.node.raft.read_index(request)  # NotLeader: no leader known
            fut = self.log_reads[request] = asyncio.get_running_loop().create_future()
            self.node.wake()
            asyncio.get_running_loop().create_task(self._linearizable_log_page(conn, rid, args, request, fut))
        else:
            raise BadRequest("consistency must be committed or linearizable")

    async def _linearizable_log_page(self, conn, rid, args, request: int, fut: asyncio.Future) -> None:
        node = self.node
        try:
            index = await asyncio.wait_for(fut, READ_INDEX_TIMEOUT_S)
            await asyncio.wait_for(node.watch(lambda: node.raft.applied_index >= index), READ_INDEX_TIMEOUT_S)
        except asyncio.TimeoutError:
            self.log_reads.pop(request, None)
            conn.send(wire.response(rid, False, error("timeout", "no read index in time (no leader, or a "
                                                                 "lost request): retry")))
            return
        self._send_log_page(conn, rid, args)

    def _send_log_page(self, conn, rid, args) -> None:
        node = self.node
        start = _arg(args, "from", int, 1)
        count = min(_arg(args, "max", int, READ_LOG_MAX), READ_LOG_MAX)
        show_all = _arg(args, "all", bool, False)
        first = node.storage.first_index()
        applied = node.raft.applied_index
        lo = max(start, first, 1)
        hi = min(applied + 1, lo + count) if count > 0 else lo
        out = []
        dups = node.machine.duplicates
        for e in node.storage.entries(lo, hi) if lo < hi else ():
            row = _log_row(e, e.index in dups)
            if row is not None and (show_all or "kind" not in row or row["kind"] == "queue"):
                out.append(row)
        conn.send(wire.response(rid, True, {"entries": out, "first_index": first, "applied_index": applied,
                                            "next": hi}))

    def op_fetch_entries(self, conn, rid, args) -> None:
        """Applied entries ending just before `to`, back to `from` at most, up to about
        `max_bytes` of data (at least one): a backfilling follower's chunk (``backfill``),
        read in a thread (large entries take a while) and sent without copying them; with
        this node's first stored index, so that the follower sees what it has compacted."""
        node = self.node
        first = node.storage.first_index()
        lo = max(_arg(args, "from", int), first)
        top = min(_arg(args, "to", int), node.raft.applied_index + 1)
        limit = min(_arg(args, "max_bytes", int, CHUNK_BYTES), CHUNK_BYTES)

        async def answer() -> None:
            chunk = await asyncio.get_running_loop().run_in_executor(None, self._chunk, lo, top, limit)
            conn.send(wire.response(rid, True, {"entries": entry_rows(chunk), "first_index": first}), large=True)

        asyncio.get_running_loop().create_task(answer())

    def op_fetch_snapshot(self, conn, rid, args) -> None:
        """This node's latest snapshot: a backfilling follower whose entries every member
        has compacted takes it instead (``backfill``). Its jobs need only entries this node
        still stores: the WAL is compacted only behind a written snapshot, to what its
        state needs, and that never decreases."""
        snap = self.node.raft.log.snapshot
        if snap is None:
            raise BadRequest(f"node {self.node.node_id} has no snapshot")
        conn.send(wire.response(rid, True, {"index": snap.meta.index, "data": snap.data}), large=True)

    def _chunk(self, lo: int, top: int, limit: int) -> list[t.Entry]:
        storage = self.node.storage
        chunk: list[t.Entry] = []
        size, step = 0, 1
        while top > lo and size < limit:
            block = storage.entries(max(lo, top - step), top)  # entries may be large: one first
            if not block:
                break
            for e in reversed(block):
                chunk.append(e)
                size += len(e.data)
                top = e.index
                if size >= limit:
                    break
            step = min(2 * step, 8)
        chunk.reverse()
        return chunk

    # --- administration ---------------------------------------------------------------------
    def op_member(self, conn, rid, args) -> None:
        self._require_leader()
        op = _arg(args, "op", str)
        peer = _arg(args, "id", int)
        address = _arg(args, "address", (str, type(None)), None)
        if op not in ("add", "learner", "promote", "remove"):
            raise BadRequest("member op must be add, learner, promote or remove")
        if peer <= 0:
            raise BadRequest("node ids are positive integers")
        if address is not None:
            from logqueue.runtime.transport import split_address

            try:
                split_address(address)
            except ValueError as exc:
                raise BadRequest(str(exc)) from None
        elif op in ("add", "learner") and self.node.address_of(peer) is None:
            raise BadRequest(f"node {peer} has no known address: pass --address HOST:PORT")
        asyncio.get_running_loop().create_task(self._change_membership(conn, rid, op, peer, address))

    async def _change_membership(self, conn, rid, op: str, peer: int, address: str | None) -> None:
        """add: join as a learner, catch up, then become a voter; learner: join as a
        learner only; promote: a caught-up learner becomes a voter; remove: leave. The
        core makes only caught-up learners voters, so waiting for that is done here."""
        node = self.node
        raft = node.raft
        try:
            if op in ("add", "learner") and address is not None and node.machine.addresses.get(peer) != address:
                index = raft.propose(envelope.address(peer, address))
                node.wake()
                await asyncio.wait_for(node.watch(lambda: raft.applied_index >= index), 10)
            if op in ("add", "learner") and peer not in raft.conf.members():
                await self._settle(raft.conf.voters, raft.conf.learners | {peer})
            if op in ("add", "promote") and peer not in raft.conf.voters:
                if peer not in raft.conf.learners:
                    raise ProposalDropped(f"node {peer} is not a learner")
                await self._promote_when_caught_up(peer)
            if op == "remove" and peer in raft.conf.members():
                await self._settle(raft.conf.voters - {peer}, raft.conf.learners - {peer})
            conf = raft.conf
            conn.send(wire.response(rid, True, {"voters": sorted(conf.voters), "learners": sorted(conf.learners)}))
        except NotLeader:
            conn.send(wire.response(rid, False, self.not_leader()))
        except ProposalDropped as exc:
            conn.send(wire.response(rid, False, error("busy", str(exc))))
        except asyncio.TimeoutError:
            conn.send(wire.response(rid, False, error("timeout", "the membership change did not finish in time; "
                                                                 "check `logqueue status`")))

    async def _promote_when_caught_up(self, peer: int) -> None:
        """Propose the promotion in the very loop turn that finds the learner caught up
        (a moment later, new commits could put it behind again)."""
        node, raft = self.node, self.node.raft
        voters, learners = raft.conf.voters | {peer}, raft.conf.learners - {peer}
        outcome: list[Exception | None] = []

        def try_promote() -> bool:
            if not node.leading():
                outcome.append(NotLeader(raft.leader_id))
            elif raft.caught_up(peer):
                try:
                    raft.propose_conf_change(voters, learners)
                    outcome.append(None)
                except ProposalDropped as exc:
                    outcome.append(exc)
            return bool(outcome)

        await asyncio.wait_for(node.watch(try_promote), 20)
        if outcome[0] is not None:
            raise outcome[0]
        node.wake()
        await self._wait_settled(voters, learners)

    async def _settle(self, voters: frozenset[int], learners: frozenset[int]) -> None:
        """Propose a change to these members and wait until it is committed (and, for a
        joint change, until C_new is)."""
        self.node.raft.propose_conf_change(voters, learners)
        self.node.wake()
        await self._wait_settled(voters, learners)

    async def _wait_settled(self, voters: frozenset[int], learners: frozenset[int]) -> None:
        node, raft = self.node, self.node.raft

        def settled() -> bool:
            # C_new is in effect once it is committed and no longer joint.
            conf_entries = raft.log.conf_entries
            return (not raft.conf.joint and (raft.conf.voters, raft.conf.learners) == (voters, learners)
                    and (not conf_entries or conf_entries[-1][0] <= raft.commit_index))

        await asyncio.wait_for(node.watch(settled), 20)

    def op_transfer(self, conn, rid, args) -> None:
        self._require_leader()
        target = _arg(args, "to", int)
        node = self.node
        try:
            node.raft.transfer_leadership(target)
        except ProposalDropped as exc:
            raise BadRequest(str(exc)) from None
        node.wake()

        async def wait() -> None:
            try:
                await asyncio.wait_for(node.watch(lambda: node.raft.leader_id == target), 5)
                conn.send(wire.response(rid, True, {"leader": target}))
            except asyncio.TimeoutError:
                conn.send(wire.response(rid, False, error("timeout", f"node {target} did not take over in time")))

        asyncio.get_running_loop().create_task(wait())

    def op_snapshot(self, conn, rid, args) -> None:
        try:
            index = self.node.take_snapshot()
        except SafetyError as exc:
            raise BadRequest(str(exc)) from None

        async def answer() -> None:  # once the snapshot is durable and the WAL compacted
            await asyncio.wrap_future(self.node.snapshot_saved)
            conn.send(wire.response(rid, True, {"index": index}))

        asyncio.get_running_loop().create_task(answer())

    def op_isolate(self, conn, rid, args) -> None:
        if not self.node.test_hooks:
            raise BadRequest("isolate needs a node started with --test-hooks")
        self.node.set_isolated(_arg(args, "on", bool))
        conn.send(wire.response(rid, True, {"isolated": self.node.isolated}))


def _log_row(e: t.Entry, duplicate: bool) -> dict | None:
    """A committed entry as `log read` prints it (data: UTF-8 text, else base64)."""
    row: dict[str, Any] = {"index": e.index, "term": e.term}
    if e.kind is t.EntryKind.NOOP:
        row["kind"], data = "noop", b""
    elif e.kind is t.EntryKind.CONFIG:
        row["kind"], data = "config", e.data
    else:
        env = envelope.decode(e.data)
        if env is not None and env[0] == envelope.RECORD:
            data = env[4]
            if duplicate:
                row["kind"] = "duplicate"
        elif env is not None:
            row["kind"], data = envelope.KIND_NAMES[env[0]], e.data
        else:
            data = e.data
    try:
        row["data"] = data.decode("utf-8")
    except UnicodeDecodeError:
        row["data"] = base64.b64encode(data).decode()
        row["encoding"] = "base64"
    return row
