"""``cluster.jsonl``: what every logqueue node said about itself, polled during a run.

The failure runs record what clients saw (``events.jsonl``); this records what the Raft
nodes saw, so a run's terms, leaders and commit indexes can be drawn across its fault
(``notebooks/raft-timeline.ipynb``). A thread asks every node for its ``status`` every
``interval_s`` on the nodes' own addresses -- not through the fault proxies, so a node cut
off by a partition is still observed, and it can be seen to keep believing it leads.

One JSON object per node per poll, ``t`` in Unix seconds (the clock of ``events.jsonl``):

    {"t": 1700000000.12, "node": 2, "role": "leader", "term": 3, "leader_id": 2,
     "commit_index": 57, "applied_index": 57, "last_index": 57}

``role`` is ``leader``, ``follower``, ``candidate`` or ``unreachable`` (the node did not
answer: killed, restarting); an unreachable line has only ``t``, ``node`` and ``role``.
"""
from __future__ import annotations

import contextlib
import json
import os
import threading
import time

CLUSTER_FILE = "cluster.jsonl"
FIELDS = ("role", "term", "leader_id", "commit_index", "applied_index", "last_index")
UNREACHABLE = "unreachable"


class ClusterLog:
    """Polls the nodes at ``addresses`` (``{node id: "host:port"}``) into ``path`` until :meth:`close`.

    Args:
        path: the ``cluster.jsonl`` to append to (created if missing).
        addresses: each node's own listen address, by node id.
        interval_s: time between polls; an election lasts a few of the nodes' election
            timeouts (300-600 ms by default), so 50 ms shows its candidate phase.
    """

    def __init__(self, path: str | os.PathLike, addresses: dict[int, str], interval_s: float = 0.05) -> None:
        self.path = os.fspath(path)
        self.addresses = dict(addresses)
        self.interval_s = interval_s
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> "ClusterLog":
        self._thread = threading.Thread(target=self._run, name="cluster-log", daemon=True)
        self._thread.start()
        return self

    def close(self) -> None:
        """Stop polling (the last poll finishes first) and close the file."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(5)

    def _run(self) -> None:
        from logqueue.client import Client

        by_address = {address: node for node, address in self.addresses.items()}
        # A short attempt timeout: a killed node must not hold up the other nodes' lines.
        client = Client(list(self.addresses.values()), timeout=self.interval_s * 4, attempt_timeout=0.2)
        try:
            with open(self.path, "a", buffering=1) as out:
                while not self._stop.is_set():
                    now = time.time()
                    try:
                        views = client.cluster_status()
                    except Exception:  # the client itself broke: record nothing this round
                        views = []
                    for view in views:
                        if view.get("role") == UNREACHABLE:
                            line = {"t": now, "node": by_address.get(view.get("address")), "role": UNREACHABLE}
                        else:
                            line = {"t": now, "node": view.get("id"), **{k: view.get(k) for k in FIELDS}}
                        out.write(json.dumps(line, separators=(",", ":")) + "\n")
                    self._stop.wait(self.interval_s)
        finally:
            with contextlib.suppress(Exception):
                client.close()
