"""TCP connections carrying frames: the accepting side, the dialing side, peer links.

Built on ``asyncio.Protocol`` rather than streams: ``data_received`` hands whole
batches of bytes to the frame decoder, which keeps the per-message cost low.

- ``Inbound``: one accepted connection. It runs the handshake (``auth``), then hands
  each Raft message or client request to the node's handler. A bad frame closes this
  connection only, with the reason logged.
- ``dial``: open a connection, run the caller's side of the handshake, return a
  ``Dialed`` connection whose frames go to a callback (used by clients and peer links).
- ``PeerLink``: the node's outbound connections to one peer (bulk data apart from the
  rest), redialed with back-off. Messages to an unreachable or slow peer are dropped:
  Raft retransmits (a dropped append is reported, so that the leader probes again).
"""
from __future__ import annotations

import asyncio
import logging
from collections import deque
from typing import Callable, Protocol

from logqueue.packing import coalesce
from logqueue.runtime import auth, wire

log = logging.getLogger("logqueue.transport")

# Beyond this many unsent bytes for one peer we drop messages instead of queueing them
# (a paused peer must not make the leader's memory grow without bound).
PEER_BUFFER_LIMIT = 8 << 20
# A client that does not read its responses is disconnected past this many bytes.
CLIENT_BUFFER_LIMIT = 64 << 20


class ChunkedWriter:
    """Feeds a transport from a queue of buffers, ``CHUNK`` bytes at a time as the socket
    drains (the transport's flow control: ``pause``/``resume``). asyncio copies whatever
    a write does not send at once into its own buffer; handed a 20 MB frame, that is a
    20 MB copy on the event loop, per peer. Here the frame is only referenced until its
    turn, and each copy is at most one chunk. Order is kept."""

    CHUNK = 256 << 10

    def __init__(self, transport: asyncio.WriteTransport) -> None:
        self.transport = transport
        transport.set_write_buffer_limits(high=self.CHUNK, low=self.CHUNK // 4)
        self._queue: deque[memoryview] = deque()
        self._queued = 0
        self._paused = False

    def write(self, data) -> None:
        if not self._queue and not self._paused and len(data) <= self.CHUNK:
            self.transport.write(data)
            return
        self._queue.append(memoryview(data))
        self._queued += len(data)
        self._pump()

    def buffered(self) -> int:
        """Bytes not sent yet: queued here and in the transport."""
        return self._queued + self.transport.get_write_buffer_size()

    def pause(self) -> None:
        self._paused = True

    def resume(self) -> None:
        self._paused = False
        self._pump()

    def _pump(self) -> None:
        queue = self._queue
        while queue and not self._paused and not self.transport.is_closing():
            head = queue[0]
            chunk = head[: self.CHUNK]
            if len(head) > self.CHUNK:
                queue[0] = head[self.CHUNK :]
            else:
                queue.popleft()
            self._queued -= len(chunk)
            self.transport.write(chunk)  # may pause us at once (the transport's high-water mark)


class Handler(Protocol):
    """What a node provides to its inbound connections."""

    node_id: int
    secret: bytes | None
    max_frame: int

    def on_peer_frames(self, conn: "Inbound", bodies: list[list]) -> None: ...

    def on_client_frames(self, conn: "Inbound", bodies: list[list]) -> None: ...

    def on_close(self, conn: "Inbound") -> None: ...


class Inbound(asyncio.Protocol):
    """An accepted connection: handshake first, then peer messages or client requests."""

    def __init__(self, handler: Handler) -> None:
        self.handler = handler
        self.decoder = wire.FrameDecoder(handler.max_frame)
        self.transport: asyncio.Transport | None = None
        self.kind: str | None = None  # "peer" or "client" once authenticated
        self.peer_id = 0
        self.listen = ""
        self.remote = "?"
        self._nonce = auth.new_nonce()
        self.closed = False
        self.writer: ChunkedWriter | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        self.writer = ChunkedWriter(transport)  # type: ignore[arg-type]
        peer = transport.get_extra_info("peername")
        self.remote = f"{peer[0]}:{peer[1]}" if peer else "?"
        transport.write(wire.frame(auth.hello(self.handler.node_id, self._nonce)))  # type: ignore[attr-defined]

    def data_received(self, data: bytes) -> None:
        if self.closed:
            return
        try:
            bodies = self.decoder.feed(data)
            if self.kind is None and bodies:
                self.kind, self.peer_id, self.listen = auth.check_auth(bodies[0], self.handler.secret, self._nonce)
                self.transport.write(wire.frame([wire.WELCOME]))
                bodies = bodies[1:]
            if not bodies:
                return
            if self.kind == "peer":
                self.handler.on_peer_frames(self, bodies)
            else:
                self.handler.on_client_frames(self, bodies)
        except (wire.FrameError, auth.AuthError) as exc:
            self.abort(str(exc))
        except Exception as exc:  # e.g. the core refusing a message: this link only
            log.exception("error handling frames from %s", self.remote)
            self.abort(f"internal error: {exc.__class__.__name__}")

    def send(self, body: list, large: bool = False) -> None:
        """Frame and send ``body``; ``large``: it may hold large payloads, which are then
        referenced rather than copied (``wire.frame_parts``)."""
        if not large:
            self.send_bytes(wire.frame(body))
            return
        for part in wire.frame_parts(body):
            self.send_bytes(part)

    def send_bytes(self, data: bytes) -> None:
        if self.closed:
            return
        self.writer.write(data)
        if self.writer.buffered() > CLIENT_BUFFER_LIMIT:
            self.abort("client does not read its responses")

    def pause_writing(self) -> None:
        self.writer.pause()

    def resume_writing(self) -> None:
        self.writer.resume()

    def abort(self, reason: str) -> None:
        """Close this connection, logging why; the node keeps serving."""
        if not self.closed:
            who = f"{self.kind or 'unauthenticated'} {self.peer_id or ''} {self.remote}".replace("  ", " ")
            log.warning("closing connection from %s: %s", who, reason)
            self.closed = True
            self.transport.abort()

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self.handler.on_close(self)


class HandshakeError(ConnectionError):
    """The node refused or broke off the handshake."""


class Dialed(asyncio.Protocol):
    """The dialing side of a connection; frames after the handshake go to ``on_frames``."""

    def __init__(self, secret: bytes | None, kind: str, peer_id: int, listen: str, max_frame: int,
                 on_frames: Callable[[list[list]], None], on_lost: Callable[[], None]) -> None:
        self.decoder = wire.FrameDecoder(max_frame)
        self.secret, self.kind, self.peer_id, self.listen = secret, kind, peer_id, listen
        self.on_frames, self.on_lost = on_frames, on_lost
        self.transport: asyncio.Transport | None = None
        self.ready: asyncio.Future = asyncio.get_running_loop().create_future()
        self.node_id: int | None = None  # the id the node announced in HELLO
        self.closed = False
        self.writer: ChunkedWriter | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        self.writer = ChunkedWriter(transport)  # type: ignore[arg-type]

    def pause_writing(self) -> None:
        self.writer.pause()

    def resume_writing(self) -> None:
        self.writer.resume()

    def data_received(self, data: bytes) -> None:
        try:
            bodies = self.decoder.feed(data)
            while bodies and not self.ready.done():
                body = bodies.pop(0)
                if self.node_id is None:
                    self.node_id, nonce = auth.parse_hello(body)
                    self.transport.write(wire.frame(auth.auth(self.secret, nonce, self.kind, self.peer_id, self.listen)))
                elif body[0] == wire.WELCOME:
                    self.ready.set_result(None)
                else:
                    raise auth.AuthError("expected WELCOME")
            if bodies:
                self.on_frames(bodies)
        except (wire.FrameError, auth.AuthError) as exc:
            if not self.ready.done():
                self.ready.set_exception(HandshakeError(str(exc)))
            log.warning("closing connection to node %s: %s", self.node_id, exc)
            self.close()

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        if not self.ready.done():
            if self.node_id is None:
                # Closed before the node said HELLO: nobody is serving there (e.g. a proxy to a
                # dead node); an error to retry elsewhere, not a refused handshake.
                self.ready.set_exception(ConnectionResetError("connection closed before the node said hello"))
            else:
                self.ready.set_exception(HandshakeError("connection closed during the handshake (wrong secret?)"))
        self.on_lost()

    def write(self, data: bytes) -> None:
        self.writer.write(data)

    def buffered(self) -> int:
        return self.writer.buffered()

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            self.transport.abort()


async def dial(host: str, port: int, *, secret: bytes | None, kind: str, peer_id: int = 0, listen: str = "",
               max_frame: int = wire.DEFAULT_MAX_FRAME, timeout: float = 2.0,
               on_frames: Callable[[list[list]], None] = lambda bodies: None,
               on_lost: Callable[[], None] = lambda: None) -> Dialed:
    """Connect and authenticate; raises OSError / HandshakeError / TimeoutError."""
    loop = asyncio.get_running_loop()

    def factory() -> Dialed:
        return Dialed(secret, kind, peer_id, listen, max_frame, on_frames, on_lost)

    async def connect() -> Dialed:
        _, proto = await loop.create_connection(factory, host, port)
        try:
            await proto.ready
        except BaseException:
            proto.close()
            raise
        return proto

    return await asyncio.wait_for(connect(), timeout)


def split_address(address: str) -> tuple[str, int]:
    """'HOST:PORT' -> (host, port); ValueError with a one-line reason."""
    host, sep, port = address.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"bad address {address!r}: expected HOST:PORT")
    return host, int(port)


class _Outbound:
    """One connection from this node to a peer, redialed in the background."""

    def __init__(self, node_id: int, peer_id: int, address: str, secret: bytes | None, listen: str,
                 on_unreachable: Callable[[int], None] = lambda peer: None) -> None:
        self.node_id, self.peer_id, self.address = node_id, peer_id, address
        self.secret, self.listen = secret, listen
        self.on_unreachable = on_unreachable  # called with peer_id when a connection is lost or a dial fails
        self.conn: Dialed | None = None
        self._task: asyncio.Task | None = None
        self._closing = False
        self.dropped = 0

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._keep_connected())

    def connected(self) -> bool:
        return self.conn is not None and not self.conn.closed

    def send(self, frames: list[list]) -> bool:
        """Write frames, each given as parts (``wire.message_frame``): small parts are
        joined, large ones written as they are (one copy, into the transport's buffer).
        False: dropped (no connection, or more than ``PEER_BUFFER_LIMIT`` unsent)."""
        conn = self.conn
        if not self.connected() or conn.buffered() > PEER_BUFFER_LIMIT:
            self.dropped += len(frames)
            return False
        for part in coalesce([part for parts in frames for part in parts]):
            conn.write(part)
        return True

    async def _keep_connected(self) -> None:
        delay = 0.02
        host, port = split_address(self.address)
        while not self._closing:
            lost = asyncio.Event()
            try:
                self.conn = await dial(host, port, secret=self.secret, kind="peer", peer_id=self.node_id,
                                       listen=self.listen, on_lost=lost.set, timeout=1.0)
                delay = 0.02
                await lost.wait()
            except (OSError, HandshakeError, asyncio.TimeoutError) as exc:
                if isinstance(exc, HandshakeError):
                    log.warning("peer %d at %s refused us: %s", self.peer_id, self.address, exc)
            self.conn = None
            if not self._closing:
                self.on_unreachable(self.peer_id)
            await asyncio.sleep(delay)
            delay = min(delay * 2, 0.25)  # a restarted peer is found again within 0.25 s

    async def close(self) -> None:
        self._closing = True
        if self.conn is not None:
            self.conn.close()
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except (asyncio.CancelledError, Exception):
                pass


class PeerLink:
    """This node's outbound connections to one peer: one for bulk data (appends that carry
    entries, snapshots), one for everything else, so a heartbeat, a vote or an answer
    never waits behind megabytes of entries in a socket buffer. Messages to an
    unreachable or slow peer are dropped: Raft retransmits."""

    def __init__(self, node_id: int, peer_id: int, address: str, secret: bytes | None, listen: str,
                 on_unreachable: Callable[[int], None] = lambda peer: None) -> None:
        self.peer_id, self.address = peer_id, address
        self.control = _Outbound(node_id, peer_id, address, secret, listen, on_unreachable)
        self.bulk = _Outbound(node_id, peer_id, address, secret, listen, on_unreachable)
        self.blocked = False  # test hook: drop everything (a cut-off link)

    @property
    def dropped(self) -> int:
        return self.control.dropped + self.bulk.dropped

    def start(self) -> None:
        self.control.start()
        self.bulk.start()

    def connected(self) -> bool:
        """Both connections are up (the peer may still be too slow to read them)."""
        return not self.blocked and self.control.connected() and self.bulk.connected()

    def send(self, frames: list[list], bulk: bool = False) -> None:
        channel = self.bulk if bulk else self.control
        if self.blocked:
            channel.dropped += len(frames)
            return
        if not channel.send(frames) and bulk:
            # Appends lost: the leader must probe again (etcd's ReportUnreachable). Otherwise they stay
            # in its inflight window as sent, and are never answered.
            asyncio.get_running_loop().call_soon(channel.on_unreachable, self.peer_id)

    async def close(self) -> None:
        await self.control.close()
        await self.bulk.close()
