"""Start real `logqueue node` processes for tests, and fault them.

``Cluster`` picks free loopback ports, runs each node as ``python -m logqueue node`` on
its own data directory, and offers the faults the tests need: SIGKILL, SIGSTOP/SIGCONT,
restart on the same data, and cutting a node off its peers (the runtime's test hook).
Every process it starts is killed by ``stop()``; use the ``cluster`` fixture factory
(``make_cluster``), which always calls it.

Polling helpers wait on a condition with a deadline instead of sleeping.
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Callable

import pytest

from logqueue.client import Client, ClientError
from logqueue.local_cluster import LocalCluster

FAST_ELECTIONS = ("--election-timeout-ms", "150-300", "--heartbeat-ms", "30")


def wait_for(predicate: Callable[[], object], timeout: float, what: str, interval: float = 0.05):
    """Poll ``predicate`` until it returns a truthy value; AssertionError after ``timeout``."""
    deadline = time.monotonic() + timeout
    last_exc: Exception | None = None
    while True:
        try:
            value = predicate()
            if value:
                return value
        except (ClientError, OSError) as exc:
            last_exc = exc
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}" + (f" ({last_exc})" if last_exc else ""))
        time.sleep(interval)


class Cluster(LocalCluster):
    """N local node processes (ids 1..N) with faults; see the module docstring."""

    def __init__(self, root: Path, n: int, extra_args: tuple[str, ...] = FAST_ELECTIONS, spare: int = 0) -> None:
        super().__init__(n, root, spare=spare, extra_args=("--test-hooks", *extra_args))
        self.client = Client(self.spec, timeout=20, attempt_timeout=1.0)

    # --- processes (start, kill, restart, alive: LocalCluster's) -------------------------------
    def pause(self, i: int) -> None:
        self.procs[i].send_signal(signal.SIGSTOP)

    def resume(self, i: int) -> None:
        self.procs[i].send_signal(signal.SIGCONT)

    def stop(self, grace_s: float = 0) -> None:
        """Kill every process (also paused ones) and close the client."""
        super().stop(grace_s)
        self.client.close()

    def log_text(self, i: int) -> str:
        return self.log_path(i).read_text(errors="replace")

    # --- views -------------------------------------------------------------------------------
    def status(self, i: int) -> dict:
        return self.client.status(self.addresses[i])

    def leader(self, among: list[int] | None = None, timeout: float = 10.0) -> int:
        """Id of the one node that says it leads (and that the others follow)."""
        ids = among or [i for i in self.procs if self.alive(i)]

        def one_leader():
            rows = {}
            for i in ids:
                try:
                    rows[i] = self.status(i)
                except ClientError:
                    continue
            leaders = [i for i, r in rows.items() if r["role"] == "leader"]
            if len(leaders) == 1:
                return leaders[0]
            return None

        return wait_for(one_leader, timeout, "one leader")

    def isolate(self, i: int, on: bool = True) -> None:
        self.client.call(self.addresses[i], "isolate", {"on": on})

    def read_log(self, i: int) -> list[dict]:
        """All committed records of node i (`log read` rows without a kind)."""
        rows, start = [], 1
        while True:
            page = self.client.read_log(self.addresses[i], start, 10_000)
            rows += [r for r in page["entries"] if "kind" not in r]
            if page["next"] > page["applied_index"]:
                return rows
            start = page["next"]

    def first_index(self, i: int) -> int:
        """The first index node i still stores (1 until it compacts its log)."""
        return self.client.read_log(self.addresses[i], 1, 0)["first_index"]

    def wait_applied(self, ids: list[int], index: int, timeout: float = 20.0) -> None:
        wait_for(lambda: all(self.status(i)["applied_index"] >= index for i in ids), timeout,
                 f"nodes {ids} to apply index {index}")


def run_cli(*args: str, timeout: float = 60, env: dict | None = None) -> subprocess.CompletedProcess:
    """Run `python -m logqueue ARGS` and capture its output."""
    return subprocess.run([sys.executable, "-m", "logqueue", *args], capture_output=True, text=True,
                          timeout=timeout, env={**os.environ, **(env or {})})


def json_lines(text: str) -> list[dict]:
    return [json.loads(line) for line in text.splitlines() if line.strip()]


class Load:
    """Appends unique payloads from a background thread until stopped; keeps what was
    acknowledged. Unavailability during faults is tolerated (those payloads are simply
    not acknowledged)."""

    def __init__(self, addresses: list[str], batch: int = 50, tag: str = "load") -> None:
        import threading

        self.client = Client(addresses, timeout=15, attempt_timeout=1.0)
        self.batch, self.tag = batch, tag
        self.acked: list[bytes] = []
        self.errors: list[str] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        k = 0
        while not self._stop.is_set():
            batch = [f"{self.tag}-{k + j}".encode() for j in range(self.batch)]
            k += self.batch
            try:
                self.client.append(batch)
            except ClientError as exc:
                self.errors.append(str(exc))
                continue
            self.acked.extend(batch)

    def wait_acked(self, more_than: int, timeout: float = 20.0) -> None:
        wait_for(lambda: len(self.acked) > more_than, timeout, f"more than {more_than} acknowledged appends")

    def stop(self) -> list[bytes]:
        self._stop.set()
        self._thread.join(30)
        self.client.close()
        return self.acked


def check_logs(cluster: Cluster, ids: list[int], acked: list[bytes], timeout: float = 30.0) -> list[dict]:
    """Every node in ``ids`` ends with the same committed log, holding each acknowledged
    payload exactly once (and no payload twice). Returns that log.

    A node that caught up by InstallSnapshot keeps only the entries after its snapshot:
    its log must equal the others' on the indexes it holds, and one node must still hold
    the whole log from index 1.
    """
    wait_for(lambda: all(cluster.status(i) for i in ids), timeout, f"nodes {ids} to answer")
    top = max(cluster.status(i)["commit_index"] for i in ids)
    cluster.wait_applied(ids, top, timeout)
    firsts = {i: cluster.first_index(i) for i in ids}
    logs = {i: cluster.read_log(i) for i in ids}
    merged: dict[int, dict] = {}
    for i in ids:
        for record in logs[i]:
            seen = merged.setdefault(record["index"], record)
            assert seen == record, f"node {i}'s entry {record['index']} differs from another node's"
    ends = {i: logs[i][-1]["index"] if logs[i] else 0 for i in ids}
    assert len(set(ends.values())) == 1, f"the nodes' logs end at different indexes: {ends}"
    log = [merged[k] for k in sorted(merged)]
    # Application entries only (no-ops and config entries leave gaps), so the start of the
    # log is asked for separately; each election before the first append adds a no-op.
    assert min(firsts.values()) == 1, f"no node holds the start of the log: first indexes {firsts}"
    datas = [r["data"].encode() for r in log]
    assert len(datas) == len(set(datas)), "a payload appears twice in the log"
    missing = set(acked) - set(datas)
    assert not missing, f"{len(missing)} acknowledged payloads are missing, e.g. {sorted(missing)[:3]}"
    return log


@pytest.fixture
def make_cluster(tmp_path):
    """Factory fixture: make_cluster(n, ...) -> a started Cluster, always stopped after."""
    made: list[Cluster] = []

    def make(n: int = 3, **kwargs) -> Cluster:
        c = Cluster(tmp_path / f"cluster{len(made)}", n, **kwargs)
        made.append(c)
        c.root.mkdir(parents=True, exist_ok=True)
        return c.start_all()

    yield make
    for c in made:
        c.stop()
