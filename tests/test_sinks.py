"""The PostgreSQL sinks against the real server, each checked with SQL of its own."""
from __future__ import annotations

import socket

import pytest

from conftest import require_server
from experiments.sinks import START_HINT, PostgresSink, SinkError, SinkUnavailable, connect, database_url, describe_database


@pytest.fixture
def make():
    require_server("postgres")
    made = []

    def factory(kind: str) -> PostgresSink:
        made.append(PostgresSink.create(kind))
        return made[-1]

    yield factory
    with connect() as conn:
        for sink in made:
            sink.close()
            conn.execute(f"DROP TABLE {sink.table}")


def sql_rows(sink: PostgresSink) -> list[tuple]:
    """What the table holds, read on a connection of the test's own."""
    with connect() as conn:
        return conn.execute(f"SELECT job, worker, token, writes, result FROM {sink.table} ORDER BY job, t").fetchall()


def test_plain_keeps_every_write(make):
    sink = make("plain")
    assert sink.write("j1", "a", b"r1", 1) and sink.write("j1", "b", b"r1", 2) and sink.write("j2", "a", b"r2")
    assert sql_rows(sink) == [("j1", "a", 1, 1, b"r1"), ("j1", "b", 2, 1, b"r1"), ("j2", "a", None, 1, b"r2")]
    assert [r["job"] for r in sink.rows()] == ["j1", "j1", "j2"]


def test_idempotent_keeps_the_first_write_of_a_job(make):
    sink = make("idempotent")
    assert sink.write("j1", "a", b"first", 1)
    assert not sink.write("j1", "b", b"second", 2)
    assert sql_rows(sink) == [("j1", "a", 1, 1, b"first")]


def test_fenced_keeps_the_highest_token_and_refuses_a_lower_one(make):
    sink = make("fenced")
    assert sink.write("j1", "new", b"from 2", 2)
    assert not sink.write("j1", "stale", b"from 1", 1)  # the stale holder comes back late
    assert not sink.write("j1", "again", b"from 2 again", 2)
    assert sql_rows(sink) == [("j1", "new", 2, 1, b"from 2")]
    assert sink.write("j2", "old", b"from 1", 1) and sink.write("j2", "new", b"from 3", 3)
    assert sql_rows(sink)[1] == ("j2", "new", 3, 2, b"from 3")  # a higher token replaces it, counted
    with pytest.raises(SinkError, match="no fencing token"):
        sink.write("j3", "w", b"x", None)


def test_every_run_gets_a_table_of_its_own(make):
    a, b = make("plain"), make("plain")
    assert a.table != b.table
    assert a.describe() == {"kind": "plain", "database": describe_database(database_url()), "table": a.table}


def test_unreachable_postgres_is_one_line_with_how_to_start_it():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with pytest.raises(SinkUnavailable) as err:
        PostgresSink.create("plain", f"postgresql://postgres@127.0.0.1:{port}/test")
    message = str(err.value)
    assert "\n" not in message and f"127.0.0.1:{port}" in message and message.endswith(START_HINT)


def test_unknown_kind_is_refused():
    with pytest.raises(SinkError, match="unknown PostgreSQL sink 'upsert'"):
        PostgresSink("upsert", "t")
