"""Client of a logqueue cluster: leader discovery, redirects, retries, pipelining.

``AsyncClient`` is the asyncio API; ``Client`` wraps it for synchronous code (its event
loop runs in a background thread). Both take the addresses of some nodes of the
cluster; any one that answers is enough to find the leader.

Retries never duplicate: every write carries this client's id and a sequence number
(a client session, Ongaro §6.3); a retry after a timeout or a leader change reuses
them, and the cluster applies each (client id, seq) once and answers a retry with the
first answer. Appends are pipelined: up to ``window`` records are in flight at once,
in frames of up to ``chunk`` records and ``CHUNK_BYTES`` of payload (one record may be
larger, up to ``MAX_PAYLOAD``: a larger one is refused before anything is sent). Without failures their order in the log is the
order given; a retry across a leader change may place a retried frame after frames
sent later.

Example::

    with Client(["127.0.0.1:7001", "127.0.0.1:7002", "127.0.0.1:7003"]) as c:
        indexes = c.append([b"a", b"b"])
        results = c.submit([commands.enqueue("jobs", b"payload")])
"""
from __future__ import annotations

import asyncio
import itertools
import os
import random
import threading
from typing import Any, Iterable

from logqueue.runtime import wire
from logqueue.runtime.transport import Dialed, HandshakeError, dial, split_address

__all__ = ["AsyncClient", "Client", "ClientError", "Unavailable", "parse_cluster"]

RETRY_PAUSE = 0.05  # between rounds when no node knows a leader (an election is running)
# Payload bytes per frame: requests stay far below the node's frame limit, and one frame
# never holds the node's loop (and its heartbeats) for long.
CHUNK_BYTES = 8 << 20
# Payload bytes of appends in flight at once (at least one frame): a node is never sent
# more than it can persist and replicate before the attempt timeout ends.
WINDOW_BYTES = 32 << 20
# An attempt waits ``attempt_timeout`` plus this long per byte of payload: a large frame
# takes the node longer to persist and replicate than a small one.
SECONDS_PER_BYTE = 1 / (4 << 20)
# The largest payload a frame can carry (room for the request around it); a node may
# refuse smaller ones (its --max-payload-bytes).
MAX_PAYLOAD = wire.DEFAULT_MAX_FRAME - (64 << 10)


def byte_chunks(items: list, size, max_count: int, max_bytes: int = CHUNK_BYTES) -> list[list]:
    """``items`` in order, cut into runs of at most ``max_count`` items and ``max_bytes`` of
    ``size(item)`` (a single larger item makes a run of its own)."""
    runs: list[list] = []
    run: list = []
    total = 0
    for item in items:
        n = size(item)
        if run and (len(run) >= max_count or total + n > max_bytes):
            runs.append(run)
            run, total = [], 0
        run.append(item)
        total += n
    if run:
        runs.append(run)
    return runs


def check_payload(payload: bytes) -> None:
    """ClientError ``payload_too_large`` (one line, both sizes) for a payload no frame can carry."""
    if len(payload) > MAX_PAYLOAD:
        raise ClientError("payload_too_large",
                          f"a payload of {len(payload)} bytes exceeds the maximum of {MAX_PAYLOAD} bytes a request "
                          f"can carry (the node's frame limit is {wire.DEFAULT_MAX_FRAME} bytes)")


class ClientError(Exception):
    """The cluster refused a request; ``code`` is machine-readable (e.g. bad_request)."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


class Unavailable(ClientError):
    """No leader answered within the client's timeout."""

    def __init__(self, message: str) -> None:
        super().__init__("unavailable", message)


def parse_cluster(spec: str | Iterable[str]) -> list[str]:
    """'h:p,h:p' (or a list) -> validated addresses; ValueError with a one-line reason."""
    items = spec.split(",") if isinstance(spec, str) else list(spec)
    out = [a.strip() for a in items if a.strip()]
    if not out:
        raise ValueError("no node address given: expected HOST:PORT[,HOST:PORT...]")
    for a in out:
        split_address(a)
    return out


class _Conn:
    """One authenticated connection to one node, with request ids matched to futures."""

    def __init__(self, address: str) -> None:
        self.address = address
        self.proto: Dialed | None = None
        self.waiting: dict[int, asyncio.Future] = {}
        self._ids = itertools.count(1)

    async def open(self, secret: bytes | None, timeout: float) -> None:
        host, port = split_address(self.address)
        self.proto = await dial(host, port, secret=secret, kind="client", timeout=timeout,
                                on_frames=self._on_frames, on_lost=self._on_lost)

    @property
    def closed(self) -> bool:
        return self.proto is None or self.proto.closed

    def _on_frames(self, bodies: list[list]) -> None:
        for body in bodies:
            if body[0] != wire.RESPONSE or len(body) != 4:
                continue
            fut = self.waiting.pop(body[1], None)
            if fut is not None and not fut.done():
                fut.set_result((body[2], body[3]))

    def _on_lost(self) -> None:
        waiting, self.waiting = self.waiting, {}
        for fut in waiting.values():
            if not fut.done():
                fut.set_exception(ConnectionError(f"connection to {self.address} lost"))

    async def call(self, op: str, args: dict, timeout: float) -> tuple[bool, Any]:
        rid = next(self._ids)
        fut = asyncio.get_running_loop().create_future()
        self.waiting[rid] = fut
        self.proto.write(wire.frame(wire.request(rid, op, args)))
        try:
            return await asyncio.wait_for(fut, timeout)
        finally:
            self.waiting.pop(rid, None)

    def close(self) -> None:
        if self.proto is not None:
            self.proto.close()


class AsyncClient:
    """Asyncio client of a cluster.

    Args:
        addresses: some node addresses ("HOST:PORT" list or comma-separated string).
        secret: the cluster secret, if the nodes were started with ``--secret-file``.
        timeout: seconds one operation may take, retries included, before Unavailable.
        attempt_timeout: seconds to wait for one node's answer before trying again.
        window: records (appends) in flight at once.
        chunk: records per append frame.
    """

    def __init__(self, addresses: str | Iterable[str], *, secret: bytes | None = None, timeout: float = 30.0,
                 attempt_timeout: float = 3.0, window: int = 8192, chunk: int = 512,
                 client_id: int | None = None) -> None:
        self.addresses = parse_cluster(addresses)
        if window < 1 or chunk < 1:
            raise ValueError("window and chunk must be at least 1")
        self.secret = secret
        self.timeout = timeout
        self.attempt_timeout = attempt_timeout
        self.window = window
        self.chunk = min(chunk, window)
        self.client_id = client_id if client_id is not None else int.from_bytes(os.urandom(8), "big") >> 1
        self._conns: dict[str, _Conn] = {}
        self._given = frozenset(self.addresses)
        self._ids: dict[int, str] = {}  # node id -> address, learned from handshakes
        self._leader: str | None = None
        self._next_seq = 1
        self._outstanding: set[int] = set()
        self._low = 1  # invariant: every seq below it has been answered
        self._slots: asyncio.Semaphore | None = None

    # --- connections -------------------------------------------------------------------------
    async def _conn(self, address: str) -> _Conn:
        conn = self._conns.get(address)
        if conn is None or conn.closed:
            conn = self._conns[address] = _Conn(address)
            try:
                await conn.open(self.secret, self.attempt_timeout)
            except BaseException:
                self._conns.pop(address, None)
                raise
            # Remember which node answers at an address we were given, so a redirect
            # to node N uses our address for N (nodes may name addresses we should not
            # use, e.g. behind proxies) rather than the node's own hint.
            if conn.proto.node_id is not None and (address in self._given or conn.proto.node_id not in self._ids):
                self._ids[conn.proto.node_id] = address
        return conn

    async def call(self, address: str, op: str, args: dict | None = None, timeout: float | None = None) -> Any:
        """Send one request to one node; ClientError if it answers with an error."""
        try:
            conn = await self._conn(address)
            ok, body = await conn.call(op, args or {}, timeout or self.attempt_timeout)
        except HandshakeError as exc:
            raise ClientError("auth", f"{address}: {exc}") from None
        except (OSError, asyncio.TimeoutError) as exc:
            raise Unavailable(f"{address} did not answer: {exc.__class__.__name__} {exc}".strip()) from None
        if not ok:
            raise ClientError(body.get("code", "error"), body.get("message", str(body)))
        return body

    async def _call_leader(self, op: str, args: dict, refresh=None, payload_bytes: int = 0) -> Any:
        """Send to the leader, following redirects and retrying until the timeout."""
        attempt_s = self.attempt_timeout + payload_bytes * SECONDS_PER_BYTE
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.timeout
        order = list(self.addresses)
        random.shuffle(order)
        rotation = itertools.cycle(order)
        last_error = "no node answered"
        while loop.time() < deadline:
            address = self._leader or next(rotation)
            if refresh is not None:
                args = refresh(args)
            try:
                conn = await self._conn(address)
                ok, body = await conn.call(op, args, min(attempt_s, max(0.05, deadline - loop.time())))
            except HandshakeError as exc:
                raise ClientError("auth", f"{address}: {exc}") from None
            except (OSError, asyncio.TimeoutError) as exc:
                last_error = f"{address}: {exc.__class__.__name__} {exc}".strip()
                self._forget(address)
                await asyncio.sleep(min(RETRY_PAUSE, max(0.0, deadline - loop.time())))
                continue
            if ok:
                self._leader = address
                return body
            code = body.get("code") if isinstance(body, dict) else None
            if code in ("not_leader", "unavailable"):
                last_error = f"{address}: {body.get('message')}"
                self._leader = self._redirect(body.get("leader"), body.get("address"), address)
                if self._leader is None:
                    await asyncio.sleep(RETRY_PAUSE)  # no leader known: an election is running
                continue
            raise ClientError(code or "error", body.get("message", str(body)) if isinstance(body, dict) else str(body))
        raise Unavailable(f"no leader answered within {self.timeout:g} s (last: {last_error})")

    def _redirect(self, leader: int | None, hint: str | None, current: str) -> str | None:
        """Where to send next after a not_leader answer naming ``leader`` at ``hint``."""
        if leader is None:
            return None
        known = self._ids.get(leader)
        if known is not None:
            return known if known != current else None
        unidentified = [a for a in self.addresses if a not in self._ids.values() and a != current]
        if unidentified:
            return unidentified[0]  # connecting to it tells us which node it is
        if hint and hint != current:
            if hint not in self.addresses:
                self.addresses.append(hint)
            return hint
        return None

    def _forget(self, address: str) -> None:
        if self._leader == address:
            self._leader = None
        conn = self._conns.pop(address, None)
        if conn is not None:
            conn.close()

    # --- client session ------------------------------------------------------------------------
    def _take_seqs(self, n: int) -> range:
        seqs = range(self._next_seq, self._next_seq + n)
        self._next_seq += n
        self._outstanding.update(seqs)
        return seqs

    def _answered(self, seqs: Iterable[int]) -> None:
        self._outstanding.difference_update(seqs)
        while self._low < self._next_seq and self._low not in self._outstanding:
            self._low += 1

    def _with_low(self, args: dict) -> dict:
        args["low"] = self._low
        return args

    # --- writes ----------------------------------------------------------------------------------
    async def append(self, datas: Iterable[bytes]) -> list[int]:
        """Append records; returns their log indexes once all are committed and applied."""
        datas = list(datas)
        for d in datas:
            if not isinstance(d, (bytes, bytearray)):
                raise TypeError("records must be bytes")
            check_payload(d)
        if self._slots is None:
            self._slots = asyncio.Semaphore(max(1, self.window // self.chunk))
        chunks = byte_chunks(datas, len, self.chunk)
        # Sequence numbers are taken in order, before any frame is sent.
        numbered = [(self._take_seqs(len(ch)), ch) for ch in chunks]
        tasks: list[asyncio.Future] = []
        inflight: list[tuple[asyncio.Future, int]] = []  # oldest first
        in_bytes = 0
        for seqs, ch in numbered:
            size = sum(len(d) for d in ch)
            while inflight and in_bytes + size > WINDOW_BYTES:
                task, done_size = inflight.pop(0)
                await asyncio.wait([task])
                in_bytes -= done_size
            task = asyncio.ensure_future(self._append_chunk(seqs, ch, size))  # started in order: sent in order
            tasks.append(task)
            inflight.append((task, size))
            in_bytes += size
        results = await asyncio.gather(*tasks)
        return [i for part in results for i in part]

    async def _append_chunk(self, seqs: range, datas: list[bytes], size: int) -> list[int]:
        async with self._slots:
            args = {"c": self.client_id, "low": self._low, "recs": [[s, bytes(d)] for s, d in zip(seqs, datas)]}
            try:
                body = await self._call_leader("append", args, refresh=self._with_low, payload_bytes=size)
            finally:
                self._answered(seqs)  # answered or given up: never retried after this
        return body["indexes"]

    async def submit(self, commands: list[dict]) -> list[dict]:
        """Apply a batch of queue commands (``logqueue.queue.commands``) in one log entry;
        returns one result dict per command."""
        (seq,) = self._take_seqs(1)
        args = {"c": self.client_id, "seq": seq, "low": self._low, "cmds": list(commands)}
        try:
            size = sum(len(c["payload"]) for c in commands if isinstance(c.get("payload"), (bytes, bytearray)))
            body = await self._call_leader("submit", args, refresh=self._with_low, payload_bytes=size)
        finally:
            self._answered((seq,))
        return body["results"]

    # --- reads and administration ---------------------------------------------------------------
    async def query(self, name: str, *, stale: bool = False, node: str | None = None, **args) -> Any:
        """A queue query (read, stats, results, dead_letters, queue_names).

        Linearizable (ReadIndex on the leader) unless ``stale=True``, which any node (or
        ``node``) answers from its own possibly lagging state."""
        req = {"name": name, "args": args, "stale": stale}
        if stale:
            return await self.call(node or self._leader or self.addresses[0], "query", req)
        return await self._call_leader("query", req)

    async def status(self, address: str | None = None) -> dict:
        """One node's own view (role, term, indexes, pid, ...); without an address, the
        leader's (waiting for an election if there is none)."""
        if address is None:
            return await self._call_leader("status_leader", {})
        return await self.call(address, "status")

    async def cluster_status(self) -> list[dict]:
        """Every known node's status; unreachable nodes get role 'unreachable'."""
        async def one(address: str) -> dict:
            try:
                return await self.status(address)
            except ClientError as exc:
                return {"id": None, "address": address, "role": "unreachable", "term": None, "leader_id": None,
                        "commit_index": None, "last_index": None, "applied_index": None, "pid": None,
                        "error": str(exc)}

        return list(await asyncio.gather(*(one(a) for a in self.addresses)))

    async def read_log(self, address: str, start: int = 1, max_count: int = 1000, all_kinds: bool = False,
                       consistency: str = "committed") -> dict:
        """Committed entries of one node: {"entries": [...], "first_index", "applied_index", "next"}.

        consistency "committed": what the node has applied -- a follower may be behind
        (a stale read). "linearizable": every append acknowledged before the call began
        is included, from any node (a follower waits for its leader's read index);
        retried on that node until the client's timeout while no leader is known."""
        args = {"from": start, "max": max_count, "all": all_kinds, "consistency": consistency}
        if consistency != "linearizable":
            return await self.call(address, "read_log", args)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.timeout
        while True:
            try:
                return await self.call(address, "read_log", args)
            except ClientError as exc:
                if exc.code not in ("unavailable", "not_leader", "timeout") or loop.time() > deadline:
                    raise
            await asyncio.sleep(0.05)

    async def member_change(self, op: str, node_id: int, address: str | None = None) -> dict:
        """Change the membership and wait until it is committed; returns {"voters",
        "learners"}. ``op``: "add" (join as a learner, catch up, become a voter),
        "learner" (join as a learner only), "promote" (a learner becomes a voter once
        caught up) or "remove"."""
        return await self._call_leader("member", {"op": op, "id": node_id, "address": address})

    async def member_add(self, node_id: int, address: str | None = None) -> list[int]:
        """Add a voter (as a learner that catches up first); returns the new voters."""
        return (await self.member_change("add", node_id, address))["voters"]

    async def member_remove(self, node_id: int) -> list[int]:
        """Remove a member by joint consensus; returns the new voters."""
        return (await self.member_change("remove", node_id))["voters"]

    async def transfer_leader(self, to: int) -> int:
        """Hand leadership to node ``to``; returns it once it leads."""
        body = await self._call_leader("transfer", {"to": to})
        return body["leader"]

    async def close(self) -> None:
        for conn in self._conns.values():
            conn.close()
        self._conns.clear()

    async def __aenter__(self) -> "AsyncClient":
        return self

    async def __aexit__(self, *exc) -> None:
        await self.close()


def _new_loop() -> asyncio.AbstractEventLoop:
    """uvloop's loop when installed (the extra "fast", as the nodes run), else asyncio's."""
    try:
        import uvloop
    except ImportError:
        return asyncio.new_event_loop()
    return uvloop.new_event_loop()


class Client:
    """Synchronous wrapper of AsyncClient (same arguments); use as a context manager.

    Its event loop (uvloop's when installed) runs in a daemon thread; each method blocks
    until its answer.
    """

    def __init__(self, addresses: str | Iterable[str], **kwargs) -> None:
        self._loop = _new_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="logqueue-client", daemon=True)
        self._thread.start()
        try:
            self._client = self._run(self._make(addresses, kwargs))
        except BaseException:
            self._stop()
            raise

    @staticmethod
    async def _make(addresses, kwargs) -> AsyncClient:
        return AsyncClient(addresses, **kwargs)

    def _run(self, coro):
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result()

    @property
    def client_id(self) -> int:
        return self._client.client_id

    @property
    def aio(self) -> AsyncClient:
        """The AsyncClient behind this client; use it only in coroutines passed to ``run``."""
        return self._client

    def run(self, coro):
        """Run ``coro`` on this client's event loop (e.g. several pipelined ``aio`` calls);
        block until it returns and give its result."""
        return self._run(coro)

    def append(self, datas: Iterable[bytes]) -> list[int]:
        return self._run(self._client.append(datas))

    def submit(self, commands: list[dict]) -> list[dict]:
        return self._run(self._client.submit(commands))

    def query(self, name: str, *, stale: bool = False, node: str | None = None, **args) -> Any:
        return self._run(self._client.query(name, stale=stale, node=node, **args))

    def status(self, address: str | None = None) -> dict:
        return self._run(self._client.status(address))

    def cluster_status(self) -> list[dict]:
        return self._run(self._client.cluster_status())

    def read_log(self, address: str, start: int = 1, max_count: int = 1000, all_kinds: bool = False,
                 consistency: str = "committed") -> dict:
        return self._run(self._client.read_log(address, start, max_count, all_kinds, consistency))

    def member_change(self, op: str, node_id: int, address: str | None = None) -> dict:
        return self._run(self._client.member_change(op, node_id, address))

    def member_add(self, node_id: int, address: str | None = None) -> list[int]:
        return self._run(self._client.member_add(node_id, address))

    def member_remove(self, node_id: int) -> list[int]:
        return self._run(self._client.member_remove(node_id))

    def transfer_leader(self, to: int) -> int:
        return self._run(self._client.transfer_leader(to))

    def call(self, address: str, op: str, args: dict | None = None) -> Any:
        return self._run(self._client.call(address, op, args))

    def close(self) -> None:
        if self._loop.is_running():
            self._run(self._client.close())
        self._stop()

    def _stop(self) -> None:
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=5)
        self._loop.close()

    def __enter__(self) -> "Client":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
