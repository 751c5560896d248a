"""Backfill: fetch the log entries behind an installed snapshot that retained jobs read.

A follower that installs a snapshot gets only the queue's metadata; the payloads and
results of the jobs it retains stay in the entries that carried them, which this node
lacks. The backfill asks the leader (``fetch_entries``) for them newest chunk first, in
chunks of at most ``CHUNK_BYTES``, and prepends each to its storage (in a thread: a chunk
of large entries is a long write), so neither side holds more than a chunk in memory.
Meanwhile the node holds committed entries back (``Node``).

Those entries are committed, hence the same on every node that has applied them (Log
Matching): when the leader cannot serve them -- in particular when this node has become
the leader meanwhile -- any other member can. When every member has compacted them (their
jobs were settled and dropped meanwhile), the node takes a member's newer snapshot
(``fetch_snapshot``), whose jobs need only entries that member stores, and goes on from
what that state needs.
"""
from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING

from logqueue.raft import types as t

if TYPE_CHECKING:
    from logqueue.runtime.node import Node

log = logging.getLogger("logqueue.node")

CHUNK_BYTES = 4 << 20
RETRY_S = 0.2


def entry_rows(entries: list[t.Entry]) -> list[list]:
    """Entries as ``fetch_entries`` sends them."""
    return [[e.index, e.term, int(e.kind), e.data] for e in entries]


def entries_of(rows: list[list]) -> list[t.Entry]:
    return [t.Entry(term, index, data, t.EntryKind(kind)) for index, term, kind, data in rows]


class Backfill:
    """The backfill task of ``node``: until its storage holds what its state machine needs."""

    def __init__(self, node: "Node") -> None:
        self.node = node
        self._task: asyncio.Task | None = None

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run())

    def done(self) -> bool:
        return self._task is not None and self._task.done()

    async def stop(self) -> None:
        if self._task is not None and not self._task.done():
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass

    async def _run(self) -> None:
        from logqueue.client import AsyncClient  # the node's own client of its peers (imported late: a cycle)

        node = self.node
        storage = node.storage
        client = AsyncClient([node.cfg.listen], secret=node.secret)
        loop = asyncio.get_running_loop()
        fetched = 0
        log.info("node %d fetching log entries %s..%d that its retained jobs read", node.node_id,
                 node.backfill_from(), storage.first_index() - 1)
        try:
            # A snapshot installed or taken from a member meanwhile moves what is needed.
            while (needed := node.backfill_from()) is not None:
                await node.test_backfill_hold()
                entries, compacted = await self._fetch(client, needed, storage.first_index())
                if entries:
                    try:
                        await loop.run_in_executor(None, storage.prepend, entries)
                    except ValueError:
                        continue  # a snapshot installed meanwhile moved the first index: fetch again
                    fetched += len(entries)
                elif not (compacted and await self._take_snapshot(client, compacted)):
                    await asyncio.sleep(RETRY_S)  # nobody could serve them yet
        finally:
            await client.close()
        log.info("node %d fetched %d log entries behind its snapshot", node.node_id, fetched)
        node.backfill_done()

    async def _fetch(self, client, needed: int, first: int) -> tuple[list[t.Entry], list[tuple[int, str]]]:
        """The newest chunk of entries ``needed..first-1`` from the first member that has
        it, and the members that have compacted ``needed`` (asked to no avail)."""
        from logqueue.client import ClientError

        compacted = []
        for peer, address in self._sources():
            try:
                body = await client.call(address, "fetch_entries", {
                    "from": needed, "to": first, "max_bytes": CHUNK_BYTES}, timeout=10)
            except ClientError as exc:
                log.warning("node %d: fetching entries from node %s failed (%s)", self.node.node_id, peer, exc)
                continue
            entries = entries_of(body["entries"])
            if entries and entries[-1].index == first - 1:
                return entries, []
            if body["first_index"] > needed:
                compacted.append((peer, address))
        return [], compacted

    async def _take_snapshot(self, client, members: list[tuple[int, str]]) -> bool:
        """Replace the state machine by the newest snapshot of one of ``members``."""
        from logqueue.client import ClientError

        for peer, address in members:
            try:
                body = await client.call(address, "fetch_snapshot", {}, timeout=30)
            except ClientError as exc:
                log.warning("node %d: fetching a snapshot from node %s failed (%s)", self.node.node_id, peer, exc)
                continue
            if self.node.adopt_snapshot(peer, body["index"], body["data"]):
                return True
        return False

    def _sources(self) -> list[tuple[int, str]]:
        """(id, address) of the members to fetch from, the leader first; never this node."""
        node = self.node
        leader = node.raft.leader_id
        others = sorted(node.raft.conf.members() - {node.node_id, leader})
        ids = ([leader] if leader not in (None, node.node_id) else []) + others
        return [(i, a) for i in ids if (a := node.address_of(i)) is not None]
