"""Test hooks on a node's storage (``logqueue node --test-hooks``): what is durable, and
whether the node sends anything before it is.

``AuditedStorage`` wraps the node's ``DiskStorage`` and follows, from the calls the node
makes, what is durable: the log up to ``durable_last`` and the hard state ``durable_hs``,
as of the last ``sync`` (or of a call durable on return: ``save_snapshot``, a suffix
rewrite's truncation). The node passes every batch of outgoing messages to
``check_send`` first; a message must not depend on anything not yet durable:

- its term <= the durable term (pre-votes excepted: they name a term not yet taken);
- a vote it casts (a granted RequestVoteResponse, a candidate's own RequestVote): the
  durable vote is that one, in that term;
- AppendEntries: its last entry <= ``durable_last`` (the leader persists before it sends);
- a successful AppendEntriesResponse: its match index <= ``durable_last``.

A violation is logged and appended to ``DATA_DIR/test-hooks/violations.jsonl``.
``--test-slow-sync-ms`` makes each sync of new entries that much slower (a slow disk),
``--test-slow-snapshot-ms`` each snapshot write.

At every durable point the wrapper rewrites ``DATA_DIR/test-hooks/durable.json``:
``{"wal": {"wal/<segment>": durable length}, "last_index", "term", "vote", "checked"}``
(``checked``: messages checked so far). The lengths are what a power cut leaves of each
log segment, so a test can cut the files back to them and restart (a segment not listed
was created after the last durable point and would vanish); the hard state and snapshot
files are replaced atomically after an fsync, so a power cut leaves them whole. On open,
the segments (as the previous process left them, perhaps unsynced) are fsynced first, so
the lengths recorded then are durable too.
"""
from __future__ import annotations

import json
import logging
import os
import time
from pathlib import Path

from logqueue.raft import types as t

log = logging.getLogger("logqueue.node.audit")

HOOKS_DIR = "test-hooks"
DURABLE_FILE = "durable.json"
VIOLATIONS_FILE = "violations.jsonl"


class AuditedStorage:
    """A storage that records what is durable and checks sends against it (see the module docstring)."""

    def __init__(self, inner, data_dir: str | os.PathLike, slow_sync_s: float = 0.0, slow_snapshot_s: float = 0.0) -> None:
        self._inner = inner
        self._slow_sync_s = slow_sync_s  # added to each sync of new entries (a slow disk)
        self._slow_snapshot_s = slow_snapshot_s  # added to each snapshot write
        self._data = Path(data_dir)
        self._hooks = self._data / HOOKS_DIR
        self._hooks.mkdir(exist_ok=True)
        self._wal_lengths: dict[str, int] = {}
        self.checked = 0
        self.violations = 0
        self._pending_hs: t.HardState | None = None
        self.durable_hs = t.HardState()
        self.durable_last = 0
        # Suffix rewrites truncate durably before writing: record that point too.
        wal = inner._wal
        truncate = wal.truncate_from

        def truncate_from(index: int) -> None:
            truncate(index)
            self.durable_last = min(self.durable_last, index - 1)
            self._record(all_durable=True)

        wal.truncate_from = truncate_from

    # --- Storage: the calls that change what is durable --------------------------------
    def load(self):
        state = self._inner.load()
        for path in self._segments():
            fd = os.open(path, os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
        self.durable_hs = self._pending_hs = state.hard_state
        self.durable_last = self._inner.last_index()
        self._record(all_durable=True)
        return state

    def set_hard_state(self, hs: t.HardState) -> None:
        self._inner.set_hard_state(hs)
        self._pending_hs = hs

    def sync(self) -> None:
        if self._slow_sync_s and self._inner.last_index() > self.durable_last:
            time.sleep(self._slow_sync_s)
        self._inner.sync()
        if self._pending_hs is not None:
            self.durable_hs = self._pending_hs
        self.durable_last = self._inner.last_index()
        self._record(all_durable=True)

    def save_snapshot(self, snap: t.Snapshot) -> None:
        time.sleep(self._slow_snapshot_s)
        self._inner.save_snapshot(snap)
        self.durable_last = max(min(self.durable_last, self._inner.last_index()), snap.meta.index)
        self._record(all_durable=False)  # the snapshot is durable, appends since the last sync are not

    def __getattr__(self, name: str):
        return getattr(self._inner, name)  # append, entries, compact, close, ...: unchanged

    # --- the record --------------------------------------------------------------------
    def _segments(self) -> list[Path]:
        return sorted((self._data / "wal").glob("*.wal"))

    def _record(self, all_durable: bool) -> None:
        """Rewrite durable.json. ``all_durable``: every segment's current length is durable;
        otherwise a segment keeps at most its last durable length."""
        lengths = {}
        for path in self._segments():
            name, size = str(path.relative_to(self._data)), path.stat().st_size
            lengths[name] = size if all_durable else min(size, self._wal_lengths.get(name, 0))
        self._wal_lengths = lengths
        self._write_record()

    def _write_record(self) -> None:
        hs = self.durable_hs
        body = {"wal": self._wal_lengths, "last_index": self.durable_last, "term": hs.term, "vote": hs.vote,
                "checked": self.checked}
        tmp = self._hooks / (DURABLE_FILE + ".tmp")
        tmp.write_text(json.dumps(body))
        os.replace(tmp, self._hooks / DURABLE_FILE)  # a SIGKILL leaves the old or the new record

    # --- the check ---------------------------------------------------------------------
    def check_send(self, messages: list[t.Message]) -> None:
        for msg in messages:
            self.checked += 1
            problem = self._undurable(msg)
            if problem is not None:
                self.violations += 1
                log.error("test hooks: %s sent before %s is durable", type(msg).__name__, problem)
                with open(self._hooks / VIOLATIONS_FILE, "a") as out:
                    out.write(json.dumps({"message": type(msg).__name__, "dst": msg.dst, "term": msg.term,
                                          "problem": problem}) + "\n")

    def _undurable(self, msg: t.Message) -> str | None:
        """What ``msg`` depends on that is not durable yet, or None."""
        hs, last = self.durable_hs, self.durable_last
        if isinstance(msg, (t.RequestVote, t.RequestVoteResponse)) and msg.pre_vote:
            return None
        if msg.term > hs.term:
            return f"term {msg.term} (durable: {hs.term})"
        casts = msg.src if isinstance(msg, t.RequestVote) else (
            msg.dst if isinstance(msg, t.RequestVoteResponse) and msg.granted else None)
        if casts is not None and (hs.term, hs.vote) != (msg.term, casts):
            return f"the vote for {casts} in term {msg.term} (durable: {hs.vote} in {hs.term})"
        if isinstance(msg, t.AppendEntries) and msg.entries and msg.entries[-1].index > last:
            return f"entry {msg.entries[-1].index} (durable up to {last})"
        if isinstance(msg, t.AppendEntriesResponse) and msg.success and msg.match_index > last:
            return f"entry {msg.match_index} (durable up to {last})"
        return None
