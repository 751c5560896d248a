"""Sinks: the system of record a worker writes each job's effect to, before it acks.

``file`` (the default) is the run's result file (``experiments.recorder.ResultSink``): a
line per write, and the worker records the ``effect`` event itself. The others are a
PostgreSQL table, one per run (``lq_<kind>_<uuid>``), reached through psycopg 3 at
``$LOGQUEUE_POSTGRES_URL`` (default ``postgresql://postgres@127.0.0.1:5432/test``):

| kind | table | a write |
| --- | --- | --- |
| ``plain`` | a row per write | always inserts: at-least-once, a redelivered job has two rows |
| ``idempotent`` | ``job`` is the primary key | ``INSERT ... ON CONFLICT DO NOTHING``: the first write of a job wins |
| ``fenced`` | ``job`` is the primary key; the row keeps the highest ``token`` | replaces the row only with a higher token, in the same statement; a lower or equal one is refused |

A write returns whether the table accepted it. For the PostgreSQL sinks the effects are
what the table holds at the end of the run: ``rows()`` reads them back and the runner
records one ``effect`` per row into ``events.jsonl`` (``t`` is the first accepted
write's), so the summary's effect counts equal the rows. A fenced row that a higher token
replaced counts its accepted writes in ``writes``.
"""
from __future__ import annotations

import os
import time
import uuid
from urllib.parse import urlsplit

KINDS = ("file", "plain", "idempotent", "fenced")
POSTGRES_KINDS = KINDS[1:]
POSTGRES_ENV = "LOGQUEUE_POSTGRES_URL"
DEFAULT_POSTGRES = "postgresql://postgres@127.0.0.1:5432/test"
START_HINT = "pg_ctlcluster --skip-systemctl-redirect $(ls /etc/postgresql) main start"
CONNECT_TIMEOUT_S = 5

_COLUMNS = "job text {key}, worker text NOT NULL, token bigint, t double precision NOT NULL, " \
           "last_t double precision NOT NULL, writes integer NOT NULL DEFAULT 1, result bytea NOT NULL"
_INSERT = "INSERT INTO {table} (job, worker, token, t, last_t, result) VALUES (%s, %s, %s, %s, %s, %s)"
_ON_CONFLICT = {
    "plain": "",
    "idempotent": " ON CONFLICT (job) DO NOTHING",
    # The comparison and the replacement are one statement: one transaction, row-locked.
    "fenced": " ON CONFLICT (job) DO UPDATE SET worker = EXCLUDED.worker, token = EXCLUDED.token, "
              "last_t = EXCLUDED.last_t, result = EXCLUDED.result, writes = {table}.writes + 1 "
              "WHERE {table}.token < EXCLUDED.token",
}


class SinkError(Exception):
    """A sink cannot be used; ``str()`` is one line."""


class SinkUnavailable(SinkError):
    """PostgreSQL cannot be reached; the message says how to start it."""


def database_url() -> str:
    return os.environ.get(POSTGRES_ENV) or DEFAULT_POSTGRES


def describe_database(url: str) -> str:
    """``url`` without a password (for summary.json)."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    return parts._replace(netloc=parts.netloc.replace(f":{parts.password}@", "@")).geturl()


def connect(url: str | None = None):
    """An autocommit psycopg connection; ``SinkUnavailable`` (one line) when PostgreSQL does not answer."""
    import psycopg

    url = url or database_url()
    try:
        return psycopg.connect(url, autocommit=True, connect_timeout=CONNECT_TIMEOUT_S)
    except psycopg.OperationalError as exc:
        reason = " ".join(str(exc).split())
        raise SinkUnavailable(f"cannot reach PostgreSQL at {describe_database(url)} ({reason}); "
                              f"start it with: {START_HINT}") from None


class PostgresSink:
    """One run's table of effects (see the module docstring). Thread-safe (psycopg
    serializes a connection's statements)."""

    def __init__(self, kind: str, table: str, url: str | None = None) -> None:
        if kind not in POSTGRES_KINDS:
            raise SinkError(f"unknown PostgreSQL sink {kind!r}: use one of {', '.join(POSTGRES_KINDS)}")
        if not table.isidentifier():
            raise SinkError(f"sink table {table!r} must be a plain SQL identifier")
        self.kind, self.table, self.url = kind, table, url or database_url()
        self._conn = connect(self.url)
        self._insert = (_INSERT + _ON_CONFLICT[kind]).format(table=table)

    @classmethod
    def create(cls, kind: str, url: str | None = None) -> "PostgresSink":
        """A new, empty table with a unique name."""
        sink = cls(kind, f"lq_{kind}_{uuid.uuid4().hex[:12]}", url)
        key = "NOT NULL" if kind == "plain" else "PRIMARY KEY"
        sink._conn.execute(f"CREATE TABLE {sink.table} ({_COLUMNS.format(key=key)})")
        return sink

    def describe(self) -> dict:
        """``{"kind", "database", "table"}`` as summary.json names the sink."""
        return {"kind": self.kind, "database": describe_database(self.url), "table": self.table}

    def write(self, job_id: str, worker_id: str, result: bytes, token: int | None = None) -> bool:
        """Write one effect; True when the table accepted it (see the module docstring).

        Raises:
            SinkError: a ``fenced`` write without a token (the backend has no fencing token).
        """
        if self.kind == "fenced" and token is None:
            raise SinkError(f"fenced sink: job {job_id} has no fencing token (the backend gives none)")
        now = time.time()
        cur = self._conn.execute(self._insert, (job_id, worker_id, token, now, now, bytes(result)))
        return cur.rowcount == 1

    def rows(self) -> list[dict]:
        """Every row, oldest first write first: ``job``, ``worker``, ``token``, ``t``, ``writes``."""
        cur = self._conn.execute(f"SELECT job, worker, token, t, writes FROM {self.table} ORDER BY t")
        return [dict(zip(("job", "worker", "token", "t", "writes"), row)) for row in cur.fetchall()]

    def close(self) -> None:
        self._conn.close()
