"""The fault proxy and process faults, asserted by behaviour over real sockets and processes."""
from __future__ import annotations

import contextlib
import socket
import subprocess
import threading
import time

import pytest

from experiments.faults.process import ProcessFaultError, alive, kill, pause, restart, resume
from experiments.faults.proxy import ProxyError, ProxyHub, parse_hostport, parse_mode


@pytest.fixture
def echo_server():
    """A threaded TCP echo server on loopback; yields (host, port)."""
    srv = socket.create_server(("127.0.0.1", 0))
    srv.settimeout(0.2)
    stop = threading.Event()

    def serve(conn: socket.socket) -> None:
        # The proxy's reset mode aborts this side with RST too.
        with conn, contextlib.suppress(ConnectionResetError, BrokenPipeError):
            while (data := conn.recv(65536)):
                conn.sendall(data)

    def accept_loop() -> None:
        while not stop.is_set():
            try:
                conn, _ = srv.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            threading.Thread(target=serve, args=(conn,), daemon=True).start()

    thread = threading.Thread(target=accept_loop, daemon=True)
    thread.start()
    yield srv.getsockname()
    stop.set()
    thread.join(2)
    srv.close()


@pytest.fixture
def hub():
    h = ProxyHub()
    yield h
    h.close()


def dial(address: str, timeout: float = 2.0) -> socket.socket:
    host, port = parse_hostport(address)
    return socket.create_connection((host, port), timeout=timeout)


def roundtrip(sock: socket.socket, data: bytes) -> bytes:
    sock.sendall(data)
    got = b""
    while len(got) < len(data):
        chunk = sock.recv(65536)
        if not chunk:
            break
        got += chunk
    return got


def wait_for(cond, timeout: float = 3.0) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.01)


def test_pass_relays_many_concurrent_connections(hub, echo_server):
    addr = hub.add("link", echo_server)
    socks = [dial(addr) for _ in range(25)]
    try:
        payloads = [bytes([i]) * (1000 + 4000 * i) for i in range(25)]
        for s, p in zip(socks, payloads):
            s.sendall(p)
        for s, p in zip(socks, payloads):
            got = b""
            while len(got) < len(p):
                got += s.recv(65536)
            assert got == p
        wait_for(lambda: hub.connections("link") == 25)
    finally:
        for s in socks:
            s.close()
    wait_for(lambda: hub.connections("link") == 0)


def test_blackhole_holds_bytes_both_ways_until_heal(hub, echo_server):
    addr = hub.add("link", echo_server)
    sock = dial(addr)
    assert roundtrip(sock, b"before") == b"before"
    hub.set("link", "blackhole")
    sock.sendall(b"during")
    sock.settimeout(0.4)
    with pytest.raises(TimeoutError):
        sock.recv(100)  # nothing crosses, yet the connection is not closed
    assert hub.connections("link") == 1
    # A new connection during the partition is accepted but gets nowhere.
    late = dial(addr)
    late.sendall(b"late")
    late.settimeout(0.3)
    with pytest.raises(TimeoutError):
        late.recv(100)
    hub.set("link", "heal")
    sock.settimeout(2)
    late.settimeout(2)
    # TCP semantics: what was in flight is delivered, in order, after the heal.
    assert sock.recv(100) == b"during"
    assert late.recv(100) == b"late"
    assert roundtrip(sock, b"after") == b"after"
    sock.close()
    late.close()


@pytest.fixture
def gated_server():
    """A server that answers each request only when told: yields (address, received, release).
    ``received`` is set once the request's bytes reached the server; the reply (the same
    bytes) is sent when the test sets ``release``."""
    srv = socket.create_server(("127.0.0.1", 0))
    received, release = threading.Event(), threading.Event()

    def serve() -> None:
        with contextlib.suppress(OSError):
            conn, _ = srv.accept()
            with conn:
                data = conn.recv(100)
                received.set()
                release.wait(10)
                conn.sendall(data)
                conn.recv(100)  # hold the connection until the client closes it

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    yield srv.getsockname(), received, release
    release.set()
    srv.close()
    thread.join(2)


def test_blackhole_stops_the_upstream_side_too(hub, gated_server):
    """Bytes from the server are held as well: the request is through, the reply is not."""
    server, received, release = gated_server
    addr = hub.add("link", server)
    sock = dial(addr)
    sock.sendall(b"x" * 10)
    assert received.wait(5), "the request never reached the server"
    hub.set("link", "blackhole")
    release.set()  # the server replies now, into the blackhole
    sock.settimeout(0.5)
    with pytest.raises(TimeoutError):
        sock.recv(100)
    hub.set("link", "pass")
    sock.settimeout(5)
    got = b""
    while len(got) < 10:
        got += sock.recv(100)
    assert got == b"x" * 10
    sock.close()


def test_reset_aborts_open_connections_and_refuses_new_ones(hub, echo_server):
    addr = hub.add("link", echo_server)
    sock = dial(addr)
    assert roundtrip(sock, b"hi") == b"hi"
    hub.set("link", "reset")
    with pytest.raises(ConnectionResetError):
        sock.recv(100)
    sock.close()
    with pytest.raises((ConnectionResetError, BrokenPipeError)):
        with dial(addr) as fresh:
            fresh.sendall(b"x")
            fresh.recv(100)
    wait_for(lambda: hub.connections("link") == 0)
    hub.set("link", "heal")
    sock = dial(addr)
    assert roundtrip(sock, b"back") == b"back"
    sock.close()


def test_delay_adds_latency_each_way_without_serialising(hub, echo_server):
    addr = hub.add("link", echo_server)
    delay_s = 0.15
    hub.set("link", "delay", delay_s * 1000)
    sock = dial(addr)
    t0 = time.monotonic()
    assert roundtrip(sock, b"ping") == b"ping"
    rtt = time.monotonic() - t0
    assert rtt >= 2 * delay_s - 0.01  # one delay there, one back
    # Ten messages sent back to back arrive after about one delay, not ten.
    t0 = time.monotonic()
    for i in range(10):
        sock.sendall(b"%d;" % i)
        time.sleep(0.01)
    want = b"".join(b"%d;" % i for i in range(10))
    got = b""
    while len(got) < len(want):
        got += sock.recv(100)
    assert got == want
    # Serialised, they would take ten delayed round trips; allow one, the sends, and half the rest.
    assert time.monotonic() - t0 < 2 * delay_s + 0.1 + 5 * 2 * delay_s
    hub.set("link", "heal")
    t0 = time.monotonic()
    assert roundtrip(sock, b"fast") == b"fast"
    assert time.monotonic() - t0 < 2 * delay_s - 0.01  # below the delayed round trip: the delay is gone
    sock.close()


def test_links_are_independent(hub, echo_server):
    a = hub.add("a", echo_server)
    b = hub.add("b", echo_server)
    hub.set("a", "blackhole")
    sb = dial(b)
    assert roundtrip(sb, b"b-ok") == b"b-ok"
    assert hub.mode("a").name == "blackhole" and hub.mode("b").name == "pass"
    hub.heal_all()
    sa = dial(a)
    assert roundtrip(sa, b"a-ok") == b"a-ok"
    sa.close()
    sb.close()


def test_a_source_link_cuts_one_client_hosts_connections_to_a_shared_port(hub, echo_server):
    address = hub.add("to-server", echo_server)
    assert hub.add_source("from-11", "to-server", "127.0.0.11") == address
    host, port = parse_hostport(address)

    def dial_from(source: str) -> socket.socket:
        return socket.create_connection((host, port), timeout=2, source_address=(source, 0))

    other, own = dial_from("127.0.0.1"), dial_from("127.0.0.11")
    assert roundtrip(own, b"own") == b"own" and roundtrip(other, b"other") == b"other"
    wait_for(lambda: hub.connections("from-11") == 1 and hub.connections("to-server") == 1)
    hub.set("from-11", "blackhole")
    own.sendall(b"during")
    own.settimeout(0.4)
    with pytest.raises(TimeoutError):
        own.recv(100)
    assert roundtrip(other, b"still") == b"still"  # the port's other connections are not cut
    hub.set("from-11", "heal")
    own.settimeout(2)
    assert own.recv(100) == b"during"
    hub.set("to-server", "blackhole")  # and the parent's mode is not the source link's
    assert roundtrip(own, b"own-ok") == b"own-ok"
    other.close()
    own.close()


def test_upstream_down_resets_the_client(hub):
    closed = socket.socket()
    closed.bind(("127.0.0.1", 0))
    port = closed.getsockname()[1]
    closed.close()  # nothing listens there now
    addr = hub.add("dead", ("127.0.0.1", port))
    with pytest.raises(ConnectionResetError):
        with dial(addr) as sock:  # the RST may even beat connect()'s return
            sock.sendall(b"x")
            sock.recv(10)


def test_a_jittered_delay_varies_within_its_bounds_and_keeps_the_order(hub, echo_server):
    addr = hub.add("link", echo_server)
    hub.set("link", parse_mode(["delay", "40", "30"]))  # each way uniformly 10-70 ms
    sock = dial(addr)
    rtts = []
    for i in range(30):
        t0 = time.monotonic()
        assert roundtrip(sock, b"%d" % i) == b"%d" % i  # in order: the answer is this message's
        rtts.append(time.monotonic() - t0)
    sock.close()
    assert min(rtts) >= 2 * 0.010 - 0.002  # never below the low bound, there and back
    # Drawn, not fixed: 30 round trips of two uniform 10-70 ms delays spread far more than 20 ms.
    assert max(rtts) - min(rtts) > 0.020


def test_mode_parsing_errors_are_one_line():
    assert str(parse_mode(["delay", "20"])) == "delay 20"
    assert str(parse_mode(["delay", "7", "6"])) == "delay 7 6"
    assert parse_mode(["heal"]).name == "pass"
    for bad in (["nope"], ["delay"], ["delay", "x"], ["delay", "-1"], ["delay", "5", "6"], ["delay", "1", "2", "3"],
                ["reset", "3"], []):
        with pytest.raises(ProxyError) as exc:
            parse_mode(bad)
        assert "\n" not in str(exc.value)
    with pytest.raises(ProxyError):
        parse_hostport("host:notaport")


@pytest.fixture
def sleeper():
    procs: list[subprocess.Popen] = []

    def spawn() -> int:
        p = subprocess.Popen(["sleep", "30"])
        procs.append(p)
        return p.pid

    yield spawn, procs
    for p in procs:
        p.kill()
        p.wait()


def proc_state(pid: int) -> bytes:
    with open(f"/proc/{pid}/stat", "rb") as f:
        return f.read().rsplit(b")", 1)[1].split()[0]


def test_process_faults(sleeper):
    spawn, procs = sleeper
    pid = spawn()
    pause(pid)
    wait_for(lambda: proc_state(pid) == b"T")
    resume(pid)
    wait_for(lambda: proc_state(pid) in (b"S", b"R"))
    new = restart(pid, spawn)
    assert new != pid and not alive(pid) and alive(new)
    kill(new)
    assert not alive(new)
    with pytest.raises(ProcessFaultError, match="no such process"):
        kill(2**22 + 12345)


def test_admit_screens_connections_by_their_first_bytes(hub, echo_server):
    addr = hub.add("peers-only", echo_server, admit=lambda head: None if len(head) < 4 else head.startswith(b"PEER"))
    sock = dial(addr)
    assert roundtrip(sock, b"PEER hello") == b"PEER hello"
    sock.close()
    with pytest.raises(ConnectionResetError):
        with dial(addr) as other:
            other.sendall(b"CLNT hello")
            other.recv(10)
