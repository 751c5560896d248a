"""The wire format and the handshake, sans I/O: frames, Raft messages, requests, HMAC."""
from __future__ import annotations

import struct

import msgpack
import pytest
from hypothesis import given
from hypothesis import strategies as st

from logqueue.raft import types as t
from logqueue.runtime import auth, envelope, wire
from logqueue.runtime.machine import ServiceMachine, StaleRequest

ENTRIES = (t.Entry(3, 8, b"a", t.EntryKind.NORMAL), t.Entry(3, 9, b"", t.EntryKind.NOOP),
           t.Entry(4, 10, t.ConfState(frozenset({1, 2, 4})).encode(), t.EntryKind.CONFIG))
MESSAGES = [
    t.RequestVote(5, 1, 2, 10, 4, pre_vote=True, transfer=False),
    t.RequestVoteResponse(5, 2, 1, True, pre_vote=True),
    t.AppendEntries(4, 1, 3, 7, 3, ENTRIES, 9),
    t.AppendEntries(4, 1, 3, 7, 3, (), 9),
    t.AppendEntriesResponse(4, 3, 1, False, 7, conflict_index=5, conflict_term=2),
    t.Heartbeat(4, 1, 2, 9, context=17),
    t.HeartbeatResponse(4, 2, 1, context=17),
    t.HeartbeatResponse(4, 2, 1, context=17, last_index=12),
    t.InstallSnapshot(4, 1, 2, t.Snapshot(t.SnapshotMeta(100, 3, t.ConfState(frozenset({1, 2}), frozenset({3}), frozenset({5}))), b"img")),
    t.TimeoutNow(4, 1, 2),
    t.ReadIndex(4, 2, 1, 33),
    t.ReadIndexResponse(4, 1, 2, 33, 9),
]


def test_every_raft_message_type_is_covered_here():
    assert {type(m) for m in MESSAGES} == set(t.MESSAGE_TYPES)


@pytest.mark.parametrize("msg", MESSAGES, ids=lambda m: type(m).__name__)
def test_every_raft_message_round_trips_through_frames(msg):
    data = wire.frame(wire.encode_message(msg))
    (body,) = wire.FrameDecoder().feed(data)
    assert wire.is_raft(body)
    assert wire.decode_message(body) == msg


def test_decoder_reassembles_frames_fed_one_byte_at_a_time():
    data = b"".join(wire.frame(wire.encode_message(m)) for m in MESSAGES)
    dec = wire.FrameDecoder()
    bodies = []
    for k in range(len(data)):
        bodies += dec.feed(data[k : k + 1])
    assert [wire.decode_message(b) for b in bodies] == MESSAGES


def test_oversized_length_is_refused_from_the_header_alone():
    dec = wire.FrameDecoder(max_frame=1024)
    with pytest.raises(wire.FrameError, match="exceeds the maximum"):
        dec.feed(struct.pack(">IB", 0xFFFFFFFF, wire.PROTOCOL_VERSION))


def test_wrong_protocol_version_is_refused():
    with pytest.raises(wire.FrameError, match="protocol version 9"):
        wire.FrameDecoder().feed(struct.pack(">IB", 1, 9) + b"\x90")


@pytest.mark.parametrize("body", [b"\xc1", msgpack.packb({"a": 1}), msgpack.packb([]), msgpack.packb(["x"])])
def test_malformed_bodies_are_refused(body):
    with pytest.raises(wire.FrameError):
        wire.FrameDecoder().feed(struct.pack(">IB", len(body), wire.PROTOCOL_VERSION) + body)


@pytest.mark.parametrize("body", [
    [99, 1, 2],  # unknown type
    [10, 1, 2, 3],  # RequestVote with missing fields
    [10, "1", 2, 3, 4, 5, False, False],  # a term that is not an int
    [10, -1, 2, 3, 4, 5, False, False],  # a negative term
    [12, 1, 2, 3, 0, 0, 0, [[1, "text", 0]]],  # entry data that is not bytes
    [12, 1, 2, 3, 0, 0, 0, [[1, b"x", 7]]],  # unknown entry kind
    [12, 1, 2, 3, 0, 0, 0, "nope"],  # entries that are not an array
    [16, 1, 2, 3, 4, 5, [1], ["x"], b"", []],  # InstallSnapshot with a bad config
])
def test_mistyped_raft_messages_are_refused(body):
    with pytest.raises(wire.FrameError):
        wire.decode_message(body)


@given(st.binary(max_size=200))
def test_random_bytes_never_raise_anything_but_frame_error(data):
    dec = wire.FrameDecoder(max_frame=1 << 16)
    try:
        for body in dec.feed(data):
            if wire.is_raft(body):
                wire.decode_message(body)
            else:
                wire.decode_request(body)
    except wire.FrameError:
        pass


def test_request_decoding_checks_types():
    assert wire.decode_request(wire.request(7, "status", {})) == (7, "status", {})
    with pytest.raises(wire.FrameError):
        wire.decode_request([wire.REQUEST, "7", "status", {}])


# --- handshake ---------------------------------------------------------------------------


def test_hmac_handshake_accepts_the_right_secret_only():
    secret = b"s" * 32
    nonce = auth.new_nonce()
    body = auth.auth(secret, nonce, "peer", 3, "127.0.0.1:1")
    assert auth.check_auth(body, secret, nonce) == ("peer", 3, "127.0.0.1:1")
    with pytest.raises(auth.AuthError, match="wrong cluster secret"):
        auth.check_auth(auth.auth(b"x" * 32, nonce, "peer", 3), secret, nonce)
    with pytest.raises(auth.AuthError):  # a recorded answer does not fit a fresh nonce
        auth.check_auth(body, secret, auth.new_nonce())
    with pytest.raises(auth.AuthError):  # claiming another identity breaks the mac
        auth.check_auth([wire.AUTH, "peer", 4, "", body[4]], secret, nonce)


def test_without_a_secret_anyone_is_admitted_but_the_frame_must_be_auth():
    nonce = auth.new_nonce()
    assert auth.check_auth(auth.auth(None, nonce, "client"), None, nonce)[0] == "client"
    with pytest.raises(auth.AuthError, match="AUTH"):
        auth.check_auth(wire.request(1, "status", {}), None, nonce)


def test_secret_file_errors_are_one_line(tmp_path):
    with pytest.raises(auth.AuthError, match="cannot read secret file"):
        auth.load_secret(tmp_path / "missing")
    short = tmp_path / "short"
    short.write_text("abc\n")
    with pytest.raises(auth.AuthError, match="at least 16"):
        auth.load_secret(short)
    good = tmp_path / "good"
    good.write_text("0123456789abcdef0123\n")
    assert auth.load_secret(good) == b"0123456789abcdef0123"


# --- client sessions in the state machine ----------------------------------------------------


def test_a_retried_record_is_applied_once_and_answered_with_the_first_index():
    m = ServiceMachine()
    assert m.apply_record(5, envelope.decode(envelope.record(42, 1, 1, b"a"))) == (42, 1, 5)
    assert m.apply_record(6, envelope.decode(envelope.record(42, 1, 1, b"a"))) == (42, 1, 5)
    assert m.duplicates == {6}
    assert m.answer(42, 1) == (True, 5)
    # Once the client says it has answers below 2, they are forgotten; a replay is stale.
    m.apply_record(7, envelope.decode(envelope.record(42, 2, 2, b"b")))
    with pytest.raises(StaleRequest):
        m.answer(42, 1)


def test_sessions_survive_snapshot_and_restore():
    m = ServiceMachine()
    m.apply_record(5, envelope.decode(envelope.record(42, 1, 1, b"a")))
    m.apply_address(envelope.decode(envelope.address(4, "127.0.0.1:9")))
    r = ServiceMachine.restore(m.snapshot())
    assert r.answer(42, 1) == (True, 5)
    assert r.addresses == {4: "127.0.0.1:9"}
    assert r.snapshot() == m.snapshot()


def test_queue_groups_are_deduplicated_by_client_and_seq():
    from logqueue.queue import commands

    m = ServiceMachine()
    group = [7, 1, 1, [commands.enqueue("q", b"job")]]
    env = envelope.decode(envelope.queue_batch(1000, [group, group]))  # the same request twice
    (c1, s1, a1), (c2, s2, a2) = m.apply_queue(3, env)
    assert a1 == a2 and a1[0]["offset"] == 0
    again = m.apply_queue(4, envelope.decode(envelope.queue_batch(900, [group])))
    assert again[0][2] == a1
    assert m.queue.stats("q", "g")["enqueued"] == 1
    assert m.stamp == 1000  # leader stamps never go back


_PACKABLE = st.recursive(
    st.none() | st.integers(-2**63, 2**64 - 1) | st.text(max_size=8)
    | st.sampled_from([b"", b"x" * 70_000, b"y" * (1 << 16)]),
    lambda inner: st.lists(inner, max_size=20) | st.dictionaries(st.text(max_size=4), inner, max_size=20),
    max_leaves=40)


@given(_PACKABLE)
def test_frame_parts_are_the_bytes_of_frame(body):
    """Large bins referenced in their own parts (dicts included: a response's map) make
    exactly the frame msgpack would."""
    assert b"".join(bytes(p) for p in wire.frame_parts([wire.RESPONSE, body])) == wire.frame([wire.RESPONSE, body])


def test_a_large_frame_fed_in_pieces_decodes_with_the_frame_after_it():
    """A large body is received into a buffer of its own (anonymous memory) and decoded once
    complete; what follows it in the same bytes is decoded too."""
    big = [wire.RESPONSE, 1, True, {"payload": bytes(range(256)) * 4096}]  # 1 MiB of data
    small = [wire.RESPONSE, 2, True, None]
    data = wire.frame(big) + wire.frame(small)
    decoder = wire.FrameDecoder()
    out = []
    for k in range(0, len(data), 100_000):
        out += decoder.feed(data[k : k + 100_000])
    assert out == [big, small]
