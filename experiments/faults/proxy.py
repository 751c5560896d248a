"""A fault-injecting TCP proxy: one listen port -> one upstream, faults switched at run time.

Every client connection is relayed to the upstream by two pumps (one per direction).
A link (one listen port) is in exactly one mode at a time:

======================  ==================================================================
``pass`` / ``heal``     bytes flow both ways unchanged (``heal`` is ``pass``: it also
                        clears a delay).
``blackhole``           a partition: connections stay open and nothing crosses in either
                        direction. Like ``iptables -j DROP`` under TCP, the bytes are not
                        corrupted: TCP would retransmit them, so whatever both ends still
                        hold is delivered, in order, after ``heal``. New connections are
                        accepted but reach the upstream only after ``heal``.
``reset``               every open connection is closed with a TCP RST on both sides, and
                        new connections are reset at once, until ``heal``.
``delay MS [J]``        every chunk is delivered MS milliseconds (uniformly MS-J to MS+J
                        with a jitter J) after it was read, in order, without limiting
                        throughput.
======================  ==================================================================

:class:`ProxyHub` runs an asyncio loop in a daemon thread and hosts any number of named
links (every worker->broker link, every logqueue node->node link); its methods are
thread-safe and return once the change is in force. A link may have *source links*
(``ProxyHub.add_source``): the connections that reach it from one client host (e.g. a
server that dials out from a loopback address of its own, Redis's ``bind-source-addr``)
obey the source link's mode instead, so one listen port carries several links.
"""
from __future__ import annotations

import asyncio
import contextlib
import random
import socket
import struct
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from logqueue.client import split_address

MODES = ("pass", "heal", "blackhole", "reset", "delay")
CHUNK = 64 * 1024


class ProxyError(ValueError):
    """A bad proxy command or address; its message is one line."""


@dataclass(frozen=True)
class Mode:
    """A link's mode: ``name`` is one of pass, blackhole, reset, delay."""

    name: str = "pass"
    delay_ms: float = 0.0
    jitter_ms: float = 0.0  # a delay is uniform in delay_ms +- jitter_ms; jitter_ms <= delay_ms

    def __str__(self) -> str:
        if self.name != "delay":
            return self.name
        return f"delay {self.delay_ms:g}" + (f" {self.jitter_ms:g}" if self.jitter_ms else "")

    def draw_delay_s(self) -> float:
        """One chunk's delay in seconds."""
        return (self.delay_ms + random.uniform(-self.jitter_ms, self.jitter_ms)) / 1000.0


def parse_mode(words: Sequence[str]) -> Mode:
    """Parse ``["delay", "200"]`` / ``["delay", "7", "6"]`` / ``["blackhole"]`` ... into a :class:`Mode`.

    Raises:
        ProxyError: unknown mode, or a missing / negative / non-numeric delay, or a jitter above the delay.
    """
    if not words:
        raise ProxyError(f"missing mode: one of {', '.join(MODES)}")
    name, args = words[0].lower(), list(words[1:])
    if name not in MODES:
        raise ProxyError(f"unknown mode {words[0]!r}: one of {', '.join(MODES)}")
    if name == "delay":
        if len(args) not in (1, 2):
            raise ProxyError("delay needs milliseconds and an optional jitter, e.g. 'delay 200' or 'delay 7 6'")
        try:
            ms, jitter = (float(a) for a in [*args, "0"][:2])
        except ValueError:
            raise ProxyError(f"delay must be numbers of milliseconds, not {' '.join(args)!r}") from None
        if ms < 0 or not 0 <= jitter <= ms:
            raise ProxyError(f"delay must be >= 0 ms with 0 <= jitter <= delay, not {' '.join(args)!r}")
        return Mode("delay", ms, jitter)
    if args:
        raise ProxyError(f"mode {name!r} takes no argument, got {' '.join(args)!r}")
    # heal is pass: it lifts every fault, including a delay.
    return Mode("pass") if name == "heal" else Mode(name)


def parse_hostport(text: str) -> tuple[str, int]:
    """``"H:P"`` -> ``(host, port)`` by logqueue's address parser; raises :class:`ProxyError` when malformed."""
    try:
        return split_address(text)
    except ValueError as exc:
        raise ProxyError(str(exc)) from None


def _abort_with_rst(writer: asyncio.StreamWriter) -> None:
    # SO_LINGER with a zero timeout makes close() send RST instead of FIN.
    sock = writer.get_extra_info("socket")
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    writer.transport.abort()


class _Connection:
    """One relayed client connection: two pumps, each a reader task and a writer task."""

    def __init__(self, link: "Link", client_r: asyncio.StreamReader, client_w: asyncio.StreamWriter):
        self.link = link
        self.client_r, self.client_w = client_r, client_w
        self.upstream_w: asyncio.StreamWriter | None = None
        self.task: asyncio.Task | None = None
        self.tasks: list[asyncio.Task] = []

    async def run(self) -> None:
        link = self.link
        self.task = asyncio.current_task()
        try:
            await link.wait_open()  # during a partition a new connection hangs, like a lost SYN
            try:
                up_r, up_w = await asyncio.open_connection(*link.upstream)
            except OSError:
                _abort_with_rst(self.client_w)
                return
            self.upstream_w = up_w
            if link.mode.name == "reset":  # the link was reset while we were connecting
                self._abort_sockets()
                return
            self.tasks = [asyncio.create_task(self._pump(up_r, self.client_w))]
            if link.admit is not None and not await self._admit(up_w):
                self._abort_sockets()
                return
            self.tasks.append(asyncio.create_task(self._pump(self.client_r, up_w)))
            # Each direction ends at its EOF (half-close is forwarded); an error in either
            # ends both, like a socket pair torn down.
            await asyncio.wait(self.tasks, return_when=asyncio.FIRST_EXCEPTION)
        finally:
            for task in self.tasks:
                task.cancel()
            await asyncio.gather(*self.tasks, return_exceptions=True)
            for w in (self.client_w, self.upstream_w):
                if w is not None and not w.transport.is_closing():
                    w.close()
            link.connections.discard(self)

    async def _admit(self, up_w: asyncio.StreamWriter) -> bool:
        """Read the client's first bytes until ``link.admit`` decides; forward them if admitted."""
        head = b""
        while (verdict := self.link.admit(head)) is None:
            chunk = await self.client_r.read(CHUNK)
            if not chunk:
                return False
            head += chunk
        if verdict:
            up_w.write(head)
        return verdict

    async def _pump(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        link = self.link
        # invariant: chunks leave in the order they arrived; each carries its due time.
        queue: asyncio.Queue[tuple[float, bytes]] = asyncio.Queue(maxsize=64)

        async def read_side() -> None:
            while True:
                await link.wait_open()  # a partition: stop reading, the kernel holds the rest
                data = await reader.read(CHUNK)
                due = time.monotonic() + link.mode.draw_delay_s()
                await queue.put((due, data))
                if not data:
                    return

        async def write_side() -> None:
            while True:
                due, data = await queue.get()
                wait = due - time.monotonic()
                if wait > 0:
                    await asyncio.sleep(wait)
                await link.wait_open()  # bytes read before the partition wait for the heal
                if not data:
                    with contextlib.suppress(OSError):
                        writer.write_eof()
                    return
                writer.write(data)
                await writer.drain()

        tasks = [asyncio.create_task(read_side()), asyncio.create_task(write_side())]
        try:
            # Normal end: the writer has forwarded EOF. Any error (a reset, a broken pipe)
            # propagates so that the whole connection ends.
            done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_EXCEPTION)
            for task in done:
                task.result()
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

    def reset(self) -> None:
        """Abort both sockets with RST and stop relaying."""
        for task in [*self.tasks, self.task]:
            if task is not None:
                task.cancel()
        self._abort_sockets()

    def _abort_sockets(self) -> None:
        for w in (self.client_w, self.upstream_w):
            if w is not None:
                _abort_with_rst(w)


class Link:
    """One listen port relayed to one upstream, with a run-time switchable :class:`Mode`.

    Use it from the asyncio loop that started it; from other threads use :class:`ProxyHub`.
    With ``admit``, the upstream's bytes flow at once but the client's first bytes are
    held until ``admit`` accepts them; a refused connection is reset.
    """

    def __init__(self, name: str, upstream: tuple[str, int], listen: tuple[str, int] = ("127.0.0.1", 0),
                 admit: Callable[[bytes], bool | None] | None = None):
        self.name = name
        # admit(first client bytes) -> True (relay), False (reset), None (need more bytes):
        # lets a node-to-node link refuse clients that were redirected onto it.
        self.admit = admit
        self.upstream = upstream
        self.listen = listen
        self.mode = Mode()
        self.connections: set[_Connection] = set()
        self._server: asyncio.base_events.Server | None = None
        self._open = asyncio.Event()
        self._open.set()
        self.parent: Link | None = None  # a source link relays its parent's listen port
        self.by_source: dict[str, Link] = {}  # client host -> the source link its connections obey

    @property
    def port(self) -> int:
        """The port actually listened on (useful when started with port 0)."""
        if self.parent is not None:
            return self.parent.port
        assert self._server is not None, "link not started"
        return self._server.sockets[0].getsockname()[1]

    @property
    def address(self) -> str:
        """``host:port`` that clients should connect to instead of the upstream."""
        return f"{self.listen[0]}:{self.port}"

    async def start(self) -> None:
        """Listen; raises ``OSError`` when the port is taken."""
        self._server = await asyncio.start_server(self._accept, *self.listen, reuse_address=True)

    async def wait_open(self) -> None:
        """Return when bytes may cross (any mode but blackhole)."""
        await self._open.wait()

    def set_mode(self, mode: Mode) -> None:
        """Switch mode now; ``reset`` aborts every open connection with RST."""
        self.mode = mode
        if mode.name == "blackhole":
            self._open.clear()
        else:
            self._open.set()
        if mode.name == "reset":
            for conn in list(self.connections):
                conn.reset()

    def source_link(self, name: str, host: str) -> "Link":
        """A link for the connections from client ``host`` to this one's port (same upstream and admit)."""
        link = Link(name, self.upstream, self.listen, self.admit)
        link.parent = self
        self.by_source[host] = link
        return link

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        peer = writer.get_extra_info("peername")
        link = self.by_source.get(peer[0], self) if peer else self
        if link.mode.name == "reset":
            _abort_with_rst(writer)
            return
        conn = _Connection(link, reader, writer)
        link.connections.add(conn)
        await conn.run()

    async def close(self) -> None:
        """Stop listening and drop every connection."""
        if self._server is not None:
            self._server.close()
        for conn in list(self.connections):
            conn.reset()
        if self._server is not None:
            await self._server.wait_closed()


class ProxyHub:
    """Many named links served by one asyncio loop in a daemon thread; thread-safe.

    >>> hub = ProxyHub()
    >>> addr = hub.add("w1->redis", ("127.0.0.1", 6379))   # doctest: +SKIP
    >>> hub.set("w1->redis", "blackhole"); hub.set("w1->redis", "heal")   # doctest: +SKIP
    >>> hub.close()
    """

    def __init__(self) -> None:
        self._loop = asyncio.new_event_loop()
        self._links: dict[str, Link] = {}
        self._thread = threading.Thread(target=self._loop.run_forever, name="fault-proxy", daemon=True)
        self._thread.start()

    def _call(self, coro, timeout: float = 10.0):
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(timeout)

    def add(self, name: str, upstream: tuple[str, int] | str, listen: tuple[str, int] | str = ("127.0.0.1", 0),
            admit: Callable[[bytes], bool | None] | None = None) -> str:
        """Start a link relaying ``listen`` to ``upstream``; returns the ``host:port`` to dial.

        ``admit`` (see :class:`Link`) screens each connection by its first client bytes.

        Raises:
            ProxyError: duplicate name or malformed address.
            OSError: the listen port is taken.
        """
        if name in self._links:
            raise ProxyError(f"link {name!r} already exists")
        up = parse_hostport(upstream) if isinstance(upstream, str) else upstream
        lis = parse_hostport(listen) if isinstance(listen, str) else listen

        async def start() -> Link:
            link = Link(name, up, lis, admit)
            await link.start()
            return link

        link = self._call(start())
        self._links[name] = link
        return link.address

    def add_source(self, name: str, link: str, host: str) -> str:
        """A link ``name`` for the connections that reach link ``link`` from client ``host`` (e.g.
        ``127.0.0.11``); its mode is set apart from ``link``'s. Returns ``link``'s address.

        Raises:
            ProxyError: duplicate name or no link ``link``.
        """
        if name in self._links:
            raise ProxyError(f"link {name!r} already exists")
        parent = self._link(link)

        async def start() -> Link:
            return parent.source_link(name, host)

        self._links[name] = self._call(start())
        return parent.address

    def remove(self, names: Sequence[str]) -> None:
        """Close the links ``names`` (each stops listening and drops its connections; none may have
        source links) and forget them, so that a later ``add`` may take a name again."""
        links = [self._link(name) for name in names]

        async def stop() -> None:
            for link in links:
                await link.close()

        self._call(stop())
        for name in names:
            del self._links[name]

    def names(self) -> list[str]:
        """The names of the links, in the order they were added."""
        return list(self._links)

    def address(self, name: str) -> str:
        """The ``host:port`` of a link's listen socket."""
        return self._link(name).address

    def _link(self, name: str) -> Link:
        try:
            return self._links[name]
        except KeyError:
            raise ProxyError(f"no link named {name!r} (links: {', '.join(self._links) or 'none'})") from None

    def set(self, name: str, mode: str | Mode, delay_ms: float | None = None) -> Mode:
        """Put link ``name`` in ``mode`` (``"delay"`` needs ``delay_ms``); returns the new mode."""
        if not isinstance(mode, Mode):
            mode = parse_mode([mode] + ([] if delay_ms is None else [str(delay_ms)]))
        link = self._link(name)

        async def apply() -> None:
            link.set_mode(mode)

        self._call(apply())
        return mode

    def set_many(self, names: Sequence[str], mode: str | Mode, delay_ms: float | None = None) -> None:
        """Apply the same mode to several links (e.g. cut a node off every peer)."""
        for name in names:
            self.set(name, mode, delay_ms)

    def heal_all(self) -> None:
        """Put every link back to ``pass``."""
        self.set_many(list(self._links), "heal")

    def mode(self, name: str) -> Mode:
        """The current mode of a link."""
        return self._link(name).mode

    def connections(self, name: str) -> int:
        """How many client connections a link relays now."""
        return len(self._link(name).connections)

    def close(self) -> None:
        """Close every link and stop the loop thread."""
        async def stop() -> None:
            for link in self._links.values():
                await link.close()
            # Let the cancelled relays finish, so none is destroyed pending when the loop stops.
            pending = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
            if pending:
                await asyncio.wait(pending, timeout=2.0)

        if self._loop.is_running():
            self._call(stop())
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(5)
        self._loop.close()

    def __enter__(self) -> "ProxyHub":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
