"""A small interpreter for scripted Raft interaction tests, in the style of etcd-io/raft's
datadriven tests.

A script is a text file of commands, each followed by a line ``----`` and the output the
command is expected to print; a blank line ends the output. Lines starting with ``#``
and blank lines between commands are kept as they are. `run_script` runs a file and
returns the text it should contain (the same file with every output replaced by the
actual one), so a test compares the two and ``--rewrite`` writes the actual text back.

The interpreter drives N real `Raft` cores in one process over an in-memory network that
delivers only when told to (`deliver`, `stabilize`). Every core has a fixed election
timeout (unless `election=LOW-HIGH`) and an rng seeded with its id, so a script always
plays out the same way. After every command each core's `Ready` is carried out in the
documented order (persist, send, apply) against an in-memory disk and a tiny state
machine (the list of applied entries, which is also its snapshot image),
and the five guarantees are checked with `logqueue.sim.invariants` -- a violation is an
error, never an expected output.

Commands (node ids are integers; ``*`` in a link means any node):

  new N [pre-vote] [check-quorum] [election=E|LOW-HIGH] [heartbeat=H] [max-inflight=K]
        [max-entries=K] [max-bytes=K] [max-inflight-bytes=K] [max-learner-lag=K]
                                           a fresh cluster of voters 1..N
  add ID...                                fresh nodes outside the configuration
  set-log ID T,T,... [term=T] [vote=V] [commit=C]
                                           rebuild a node from a log of these terms
                                           (to set a scene: Raft assumes disks are kept)
  campaign ID                              tick the node until it campaigns
  tick ID[,ID...]|all [N] [stabilize]      N ticks of these nodes (default 1); with
                                           `stabilize`, deliver everything after each
                                           tick and print only role changes
  propose ID DATA                          propose on a node; prints the index
  conf-change ID VOTER... [learners=L,...]  propose a membership change (default:
                                           learners stay learners unless made voters)
  transfer ID TARGET                       ask leader ID to hand over to TARGET
  read-index ID REQUEST                    ask for a linearizable read
  compact ID INDEX [retain=R]              snapshot the state machine at INDEX, compact
                                           (keeping the last R entries)
  deliver [SRC->DST [KIND]]                deliver the messages queued now (matching;
                                           KIND as printed, e.g. HeartbeatResp)
  drop [SRC->DST [KIND]]                   lose the queued messages (matching)
  progress ID                              the leader's view of each follower
  report-unreachable ID PEER               the runtime of ID could not reach PEER
  forget-leader ID                         the runtime of ID knows its leader is gone
  stabilize [ID...]                        deliver until no message (among IDs) is queued
  partition A B | C D                      cut every link between the groups
  heal                                     remove the partition
  crash ID / restart ID                    lose memory / reboot from the disk
  status, logs, conf, applied              print per-node state
"""
from __future__ import annotations

import random
import shlex
from dataclasses import dataclass, field
from pathlib import Path

from logqueue.raft import (
    AppendEntries,
    AppendEntriesResponse,
    Config,
    ConfState,
    Entry,
    EntryKind,
    HardState,
    Heartbeat,
    HeartbeatResponse,
    InstallSnapshot,
    Message,
    NotLeader,
    ProposalDropped,
    Raft,
    ReadIndex,
    ReadIndexResponse,
    RequestVote,
    RequestVoteResponse,
    Role,
    TimeoutNow,
)
from logqueue.sim.invariants import Invariants
from logqueue.sim.node import Disk  # what survives a crash: the simulator's disk

SEPARATOR = "----"
APPLIED_SEP = "; "  # between applied entries in the state machine (and its snapshots)
MAX_ROUNDS = 1000  # bound on `stabilize` and `campaign`


class ScriptError(Exception):
    """The script itself is wrong (unknown command, bad argument)."""


# --- compact rendering ------------------------------------------------------------------
def fmt_entry(e: Entry) -> str:
    head = f"{e.term}/{e.index}"
    if e.kind is EntryKind.NOOP:
        return f"{head} noop"
    if e.kind is EntryKind.CONFIG:
        return f"{head} {fmt_conf(ConfState.decode(e.data))}"
    return f"{head} {e.data.decode(errors='replace')}"


def fmt_conf(conf: ConfState) -> str:
    ids = lambda s: ",".join(map(str, sorted(s)))  # noqa: E731
    return (
        f"voters={ids(conf.voters)}"
        + (f" outgoing={ids(conf.outgoing)}" if conf.joint else "")
        + (f" learners={ids(conf.learners)}" if conf.learners else "")
    )


def fmt_msg(m: Message) -> str:
    """One line per message; `T/I` is a (term, index) log position as in etcd."""
    head = f"{m.src}->{m.dst}"
    if isinstance(m, RequestVote):
        kind = "PreVote" if m.pre_vote else "Vote"
        extra = " transfer" if m.transfer else ""
        return f"{head} {kind} term={m.term} last={m.last_log_term}/{m.last_log_index}{extra}"
    if isinstance(m, RequestVoteResponse):
        kind = "PreVoteResp" if m.pre_vote else "VoteResp"
        return f"{head} {kind} term={m.term} {'granted' if m.granted else 'rejected'}"
    if isinstance(m, AppendEntries):
        entries = ", ".join(map(fmt_entry, m.entries))
        return f"{head} App term={m.term} prev={m.prev_term}/{m.prev_index} commit={m.commit} [{entries}]"
    if isinstance(m, AppendEntriesResponse):
        if m.success:
            return f"{head} AppResp term={m.term} match={m.match_index}"
        hint = f"hint={m.conflict_term}/{m.conflict_index}"
        return f"{head} AppResp term={m.term} rejected prev={m.match_index} {hint}"
    if isinstance(m, Heartbeat):
        return f"{head} Heartbeat term={m.term} commit={m.commit}" + (f" ctx={m.context}" if m.context else "")
    if isinstance(m, HeartbeatResponse):
        return f"{head} HeartbeatResp term={m.term}" + (f" ctx={m.context}" if m.context else "")
    if isinstance(m, InstallSnapshot):
        meta = m.snapshot.meta
        return f"{head} Snapshot term={m.term} snap={meta.term}/{meta.index} {fmt_conf(meta.conf)}"
    if isinstance(m, TimeoutNow):
        return f"{head} TimeoutNow term={m.term}"
    if isinstance(m, ReadIndex):
        return f"{head} ReadIndex term={m.term} ctx={m.context}"
    if isinstance(m, ReadIndexResponse):
        return f"{head} ReadIndexResp term={m.term} ctx={m.context} index={m.index}"
    raise TypeError(f"unknown message {m!r}")


def _split_state(data: bytes) -> list[str]:
    return data.decode().split(APPLIED_SEP) if data else []


def entry_data(index: int, term: int) -> bytes:
    # Entries made by `set-log` are named by their position, so equal (index, term) means
    # equal entries across nodes, as Log Matching requires of a real history.
    return f"e{index}t{term}".encode()


# --- the in-memory world ----------------------------------------------------------------
@dataclass
class Node:
    id: int
    raft: Raft
    disk: Disk
    bootstrap: ConfState | None
    alive: bool = True
    applied: list[str] = field(default_factory=list)  # the state machine: applied entries, in order
    applied_index: int = 0
    last_view: tuple = ()  # (role, term) last printed

    def state_data(self) -> bytes:
        return APPLIED_SEP.join(self.applied).encode()


class Cluster:
    """N real cores over a queue of in-flight messages that moves only when told to."""

    def __init__(self, raft_cls: type[Raft] = Raft, invariants: type[Invariants] = Invariants) -> None:
        self.raft_cls = raft_cls
        self.invariants = invariants
        self.cfg = Config()
        self.nodes: dict[int, Node] = {}
        self.queue: list[Message] = []
        self.groups: list[set[int]] = []
        self.inv = invariants()
        self.out: list[str] = []
        # Observers called as hook(node, ready) after each Ready is carried out (unit tests).
        self.ready_hooks: list = []

    # --- building nodes -------------------------------------------------------------
    def configure(self, n: int, **cfg) -> None:
        self.cfg = Config(**cfg)
        self.nodes, self.queue, self.groups, self.inv = {}, [], [], self.invariants()
        voters = ConfState(frozenset(range(1, n + 1)))
        for i in range(1, n + 1):
            self._boot(i, Disk(), voters)

    def add(self, node_id: int) -> None:
        if node_id in self.nodes:
            raise ScriptError(f"node {node_id} exists already")
        self._boot(node_id, Disk(), None)

    def set_log(self, node_id: int, terms: list[int], term: int | None, vote: int | None, commit: int) -> None:
        node = self.node(node_id)
        entries = [Entry(t, i, entry_data(i, t)) for i, t in enumerate(terms, start=1)]
        if any(b < a for a, b in zip(terms, terms[1:])):
            raise ScriptError(f"terms must not decrease along a log: {terms}")
        term = max(terms, default=0) if term is None else term
        disk = Disk()
        disk.set_hard_state(HardState(term, vote, commit))
        disk.append(entries)
        # Made-up history must obey Log Matching too: record it as persisted.
        prev = 0
        for e in entries:
            self.inv.entry_at.setdefault((e.index, e.term), (e.data, int(e.kind), prev))
            prev = e.term
        self._boot(node_id, disk, node.bootstrap)

    def _boot(self, node_id: int, disk: Disk, bootstrap: ConfState | None) -> None:
        raft = disk.boot(self.raft_cls, node_id, self.cfg, random.Random(node_id), bootstrap)
        node = Node(node_id, raft, disk, bootstrap)
        # The state machine restarts from the snapshot (or empty) and re-applies from there.
        if disk.snapshot is not None:
            node.applied = _split_state(disk.snapshot.data)
            node.applied_index = disk.snapshot.meta.index
        node.last_view = (raft.role, raft.term)
        self.nodes[node_id] = node

    def node(self, node_id: int) -> Node:
        if node_id not in self.nodes:
            raise ScriptError(f"no node {node_id} (nodes: {sorted(self.nodes)})")
        return self.nodes[node_id]

    def crash(self, node_id: int) -> None:
        self.node(node_id).alive = False

    def restart(self, node_id: int) -> None:
        node = self.node(node_id)
        if node.alive:
            raise ScriptError(f"node {node_id} is running; crash it first")
        self._boot(node_id, node.disk, node.bootstrap)

    # --- the Ready loop -------------------------------------------------------------
    def process(self) -> None:
        """Carry out every live node's Ready until none has work left."""
        for _ in range(MAX_ROUNDS):
            busy = False
            self._report_views()
            self._check_new_leaders()
            for node in self.nodes.values():
                if node.alive and node.raft.has_ready():
                    busy = True
                    self._process_one(node)
            if not busy:
                return
        raise ScriptError("Readies did not settle")

    def _check_new_leaders(self) -> None:
        for raft in self.inv.check_roles([n.raft for n in self.nodes.values() if n.alive]):
            self.inv.on_new_leader(raft)

    def _process_one(self, node: Node) -> None:
        raft = node.raft
        rd = raft.ready()
        # 1. persist: snapshot, entries, hard state -- before anything is sent.
        node.disk.persist(rd)
        self.inv.on_persist(raft, rd.entries, rd.term if rd.role is Role.LEADER else None)
        # 2. send.
        self.queue.extend(rd.messages)
        # 3. apply.
        if rd.snapshot is not None:
            node.applied = _split_state(rd.snapshot.data)
            node.applied_index = rd.snapshot.meta.index
        for e in rd.committed:
            self.inv.on_apply(node.id, e)
            node.applied.append(fmt_entry(e))
            node.applied_index = e.index
        for rs in rd.read_states:
            self.out.append(f"{node.id}: read {rs.request} ready at index {rs.index}")
        raft.advance(rd)
        for hook in self.ready_hooks:
            hook(node, rd)

    def _report_views(self) -> None:
        """Print each change of a node's role or term (as it happened in step or tick)."""
        for node in self.nodes.values():
            view = (node.raft.role, node.raft.term)
            if node.alive and view != node.last_view:
                node.last_view = view
                self.out.append(f"{node.id}: {view[0].value} in term {view[1]}")

    # --- the network ----------------------------------------------------------------
    def _cut(self, src: int, dst: int) -> bool:
        if not self.groups:
            return False
        side = lambda i: next((k for k, g in enumerate(self.groups) if i in g), -1)  # noqa: E731
        return side(src) != side(dst)

    def take(
        self, link: tuple[int | None, int | None], among: set[int] | None = None, kind: str | None = None
    ) -> list[Message]:
        """Remove and return the queued messages on `link` (None: any) between `among`
        nodes, of `kind` (the name `fmt_msg` prints) if given."""
        src, dst = link

        def match(m: Message) -> bool:
            if among is not None and not {m.src, m.dst} <= among:
                return False
            if kind is not None and fmt_msg(m).split()[1] != kind:
                return False
            return (src is None or m.src == src) and (dst is None or m.dst == dst)

        taken = [m for m in self.queue if match(m)]
        self.queue = [m for m in self.queue if not match(m)]
        return taken

    def deliver(
        self, link: tuple[int | None, int | None] = (None, None), among: set[int] | None = None, kind: str | None = None
    ) -> int:
        """Deliver the matching messages queued now (not those they cause); returns how many."""
        batch = self.take(link, among, kind)
        for m in batch:
            node = self.nodes.get(m.dst)
            if self._cut(m.src, m.dst):
                self.out.append(f"{fmt_msg(m)} (dropped: partition)")
            elif node is None or not node.alive:
                self.out.append(f"{fmt_msg(m)} (dropped: {m.dst} is down)")
            else:
                self.out.append(fmt_msg(m))
                node.raft.step(m)
                self.process()
        return len(batch)

    def stabilize(self, among: set[int] | None = None) -> None:
        """Deliver until no message (between `among` nodes, if given) is queued."""
        for _ in range(MAX_ROUNDS):
            if not self.deliver(among=among):
                return
        raise ScriptError(f"not stable after {MAX_ROUNDS} rounds")

    # --- views ----------------------------------------------------------------------
    def status_lines(self) -> list[str]:
        lines = []
        for node in self.nodes.values():
            if not node.alive:
                lines.append(f"{node.id}: down")
                continue
            r = node.raft
            lines.append(
                f"{node.id}: {r.role.value} term={r.term} vote={r.vote or '-'} leader={r.leader_id or '-'} "
                f"commit={r.commit_index} last={r.last_index} applied={node.applied_index}"
            )
        return lines

    def log_lines(self) -> list[str]:
        """Terms per node; `|` follows the last committed entry."""
        lines = []
        for node in self.nodes.values():
            if not node.alive:
                disk = node.disk
                snap = f"(snap {disk.snapshot.meta.term}/{disk.snapshot.meta.index}) " if disk.snapshot else ""
                lines.append(f"{node.id}: down, on disk: {snap}{' '.join(str(e.term) for e in disk.load().entries)}".rstrip())
                continue
            log = node.raft.log
            parts = [f"(snap {log.snap_term}/{log.snap_index})"] if log.snap_index else []
            if log.committed == log.snap_index and log.snap_index:
                parts.append("|")
            for e in log.entries:
                parts.append(str(e.term))
                if e.index == log.committed:
                    parts.append("|")
            lines.append(f"{node.id}: " + " ".join(parts) if parts else f"{node.id}:")
        return lines


# --- the script language ----------------------------------------------------------------
def _int(word: str, what: str) -> int:
    try:
        return int(word)
    except ValueError:
        raise ScriptError(f"{what} must be an integer, got {word!r}") from None


def _link(word: str) -> tuple[int | None, int | None]:
    src, sep, dst = word.partition("->")
    if not sep:
        raise ScriptError(f"a link is SRC->DST (or * for any), got {word!r}")
    part = lambda w: None if w == "*" else _int(w, "a node id")  # noqa: E731
    return part(src), part(dst)


def _options(words: list[str]) -> tuple[list[str], dict[str, str]]:
    plain = [w for w in words if "=" not in w]
    named = dict(w.split("=", 1) for w in words if "=" in w)
    return plain, named


def execute(cluster: Cluster, line: str) -> list[str]:
    """Run one command line; returns the lines it prints."""
    cmd, *args = shlex.split(line)
    cluster.out = []
    handler = COMMANDS.get(cmd)
    if handler is None:
        raise ScriptError(f"unknown command {cmd!r} (known: {', '.join(sorted(COMMANDS))})")
    if len(args) < MIN_ARGS.get(cmd, 0):
        raise ScriptError(f"{cmd} needs at least {MIN_ARGS[cmd]} argument(s); see the list in tests/raft_script.py")
    handler(cluster, args)
    cluster.process()
    return cluster.out or ["ok"]


def _new(c: Cluster, args: list[str]) -> None:
    plain, named = _options(args)
    if len(plain) < 1:
        raise ScriptError("new N [pre-vote] [check-quorum] [option=value ...]")
    low, _, high = named.pop("election", "10").partition("-")
    election = (_int(low, "election"), _int(high or low, "election"))
    keys = {"heartbeat": "heartbeat_ticks", "max-inflight": "max_inflight",
            "max-entries": "max_entries_per_msg", "max-bytes": "max_bytes_per_msg",
            "max-inflight-bytes": "max_inflight_bytes", "max-learner-lag": "max_learner_lag"}
    cfg = {keys[k]: _int(v, k) for k, v in named.items() if k in keys}
    unknown = set(named) - set(keys) | set(plain[1:]) - {"pre-vote", "check-quorum"}
    if unknown:
        raise ScriptError(f"unknown options {sorted(unknown)}")
    cfg.setdefault("heartbeat_ticks", 1)
    try:
        c.configure(
            _int(plain[0], "N"),
            election_ticks=election,  # fixed by default: scripts decide who times out first
            pre_vote="pre-vote" in plain,
            check_quorum="check-quorum" in plain,
            **cfg,
        )
    except ValueError as exc:
        raise ScriptError(str(exc)) from None


def _add(c: Cluster, args: list[str]) -> None:
    for a in args:
        c.add(_int(a, "node id"))


def _set_log(c: Cluster, args: list[str]) -> None:
    plain, named = _options(args)
    if not plain:
        raise ScriptError("set-log ID T,T,... [term=T] [vote=V] [commit=C]")
    terms = [_int(t, "a term") for t in plain[1].split(",")] if len(plain) > 1 else []
    term = _int(named["term"], "term") if "term" in named else None
    vote = _int(named["vote"], "vote") if "vote" in named else None
    c.set_log(_int(plain[0], "node id"), terms, term, vote, _int(named.get("commit", "0"), "commit"))


def _campaign(c: Cluster, args: list[str]) -> None:
    raft = c.node(_int(args[0], "node id")).raft
    if raft.role is Role.LEADER or not raft.promotable():
        c.out.append(f"error: node {raft.id} cannot campaign ({raft.role.value}, {fmt_conf(raft.conf)})")
        return
    for _ in range(MAX_ROUNDS):
        raft.tick()
        if raft.role in (Role.PRE_CANDIDATE, Role.CANDIDATE, Role.LEADER) and raft.election_elapsed == 0:
            return
    raise ScriptError(f"node {raft.id} did not campaign within {MAX_ROUNDS} ticks")


def _tick(c: Cluster, args: list[str]) -> None:
    plain = [a for a in args if a != "stabilize"]
    ids = sorted(c.nodes) if plain[0] == "all" else [_int(a, "node id") for a in plain[0].split(",")]
    for _ in range(_int(plain[1], "ticks") if len(plain) > 1 else 1):
        for i in ids:
            if c.node(i).alive:
                c.node(i).raft.tick()
        c.process()
        if "stabilize" in args:
            c.stabilize()
    if "stabilize" in args:  # long runs: print the role changes only
        c.out = [line for line in c.out if "->" not in line]


def _call(c: Cluster, fn, *a) -> None:
    try:
        result = fn(*a)
    except (NotLeader, ProposalDropped) as exc:
        c.out.append(f"error: {type(exc).__name__}: {exc}")
        return
    if isinstance(result, int):
        c.out.append(f"index {result}")


def _propose(c: Cluster, args: list[str]) -> None:
    _call(c, c.node(_int(args[0], "node id")).raft.propose, args[1].encode())


def _conf_change(c: Cluster, args: list[str]) -> None:
    plain, named = _options(args)
    voters = frozenset(_int(a, "voter") for a in plain[1:])
    learners = frozenset(_int(a, "learner") for a in named["learners"].split(",") if a) if "learners" in named else None
    _call(c, c.node(_int(plain[0], "node id")).raft.propose_conf_change, voters, learners)


def _transfer(c: Cluster, args: list[str]) -> None:
    _call(c, c.node(_int(args[0], "node id")).raft.transfer_leadership, _int(args[1], "target"))


def _read_index(c: Cluster, args: list[str]) -> None:
    _call(c, c.node(_int(args[0], "node id")).raft.read_index, _int(args[1], "request"))


def _compact(c: Cluster, args: list[str]) -> None:
    plain, named = _options(args)
    node = c.node(_int(plain[0], "node id"))
    index = _int(plain[1], "index")
    if index != node.applied_index:
        raise ScriptError(f"node {node.id} can snapshot only at its applied index {node.applied_index}")
    snap = node.raft.compact(index, node.state_data(), _int(named.get("retain", "0"), "retain"))
    node.disk.save_snapshot(snap)


def _deliver(c: Cluster, args: list[str]) -> None:
    c.deliver(_link(args[0]) if args else (None, None), kind=args[1] if len(args) > 1 else None)


def _drop(c: Cluster, args: list[str]) -> None:
    for m in c.take(_link(args[0]) if args else (None, None), kind=args[1] if len(args) > 1 else None):
        c.out.append(f"{fmt_msg(m)} (dropped)")


def _progress(c: Cluster, args: list[str]) -> None:
    raft = c.node(_int(args[0], "node id")).raft
    if raft.role is not Role.LEADER:
        raise ScriptError(f"node {raft.id} is not the leader")
    for peer, pr in sorted(raft.progress.items()):
        extra = f" pending-snapshot={pr.pending_snapshot}" if pr.pending_snapshot else ""
        c.out.append(f"{peer}: {pr.state.value} match={pr.match} next={pr.next}{extra}")


def _partition(c: Cluster, args: list[str]) -> None:
    groups = " ".join(args).split("|")
    c.groups = [{_int(w, "node id") for w in g.split()} for g in groups]


def _heal(c: Cluster, args: list[str]) -> None:
    c.groups = []


def _crash(c: Cluster, args: list[str]) -> None:
    c.crash(_int(args[0], "node id"))


def _restart(c: Cluster, args: list[str]) -> None:
    c.restart(_int(args[0], "node id"))


def _status(c: Cluster, args: list[str]) -> None:
    c.out.extend(c.status_lines())


def _logs(c: Cluster, args: list[str]) -> None:
    c.out.extend(c.log_lines())


def _conf(c: Cluster, args: list[str]) -> None:
    c.out.extend(f"{n.id}: {fmt_conf(n.raft.conf)}" for n in c.nodes.values() if n.alive)


def _applied(c: Cluster, args: list[str]) -> None:
    c.out.extend(f"{n.id}: {APPLIED_SEP.join(n.applied)}".rstrip() for n in c.nodes.values() if n.alive)


COMMANDS = {
    "new": _new, "add": _add, "set-log": _set_log, "campaign": _campaign, "tick": _tick,
    "propose": _propose, "conf-change": _conf_change, "transfer": _transfer,
    "read-index": _read_index, "compact": _compact, "deliver": _deliver, "drop": _drop,
    "stabilize": lambda c, a: c.stabilize({_int(w, "node id") for w in a} or None), "partition": _partition, "heal": _heal,
    "crash": _crash, "restart": _restart, "status": _status, "logs": _logs, "conf": _conf,
    "applied": _applied, "progress": _progress,
    "report-unreachable": lambda c, a: c.node(_int(a[0], "node id")).raft.report_unreachable(_int(a[1], "peer")),
    "forget-leader": lambda c, a: c.node(_int(a[0], "node id")).raft.forget_leader(),
}

MIN_ARGS = {
    "new": 1, "add": 1, "set-log": 1, "campaign": 1, "tick": 1, "propose": 2, "conf-change": 2,
    "transfer": 2, "read-index": 2, "compact": 2, "partition": 1, "crash": 1, "restart": 1,
    "progress": 1, "report-unreachable": 2, "forget-leader": 1,
}

# --- the datadriven file format ---------------------------------------------------------
@dataclass
class Block:
    lead: list[str]  # comments and blank lines before the command
    command: str
    line_no: int
    expected: list[str]


def parse(text: str) -> tuple[list[Block], list[str]]:
    """Split a script into command blocks and the trailing comment lines."""
    lines = text.splitlines()
    blocks: list[Block] = []
    lead: list[str] = []
    i = 0
    while i < len(lines):
        line = lines[i]
        if not line.strip() or line.startswith("#"):
            lead.append(line)
            i += 1
            continue
        if i + 1 >= len(lines) or lines[i + 1] != SEPARATOR:
            raise ScriptError(f"line {i + 1}: command {line!r} is not followed by {SEPARATOR!r}")
        j = i + 2
        while j < len(lines) and lines[j].strip():
            j += 1
        blocks.append(Block(lead, line, i + 1, lines[i + 2 : j]))
        lead = []
        i = j
    return blocks, lead


def run_script(path: Path, cluster: Cluster | None = None) -> tuple[str, str]:
    """Run a script file (on `cluster`, to look at it afterwards, or a fresh one);
    returns (expected text, actual text) of the whole file."""
    try:
        blocks, tail = parse(path.read_text())
    except ScriptError as exc:
        raise ScriptError(f"{path.name}: {exc}") from None
    cluster = cluster or Cluster()
    out: list[str] = []
    for b in blocks:
        try:
            got = execute(cluster, b.command)
        except ScriptError as exc:
            raise ScriptError(f"{path.name}:{b.line_no}: {b.command}: {exc}") from None
        out += [*b.lead, b.command, SEPARATOR, *got]
    expected = [line for b in blocks for line in [*b.lead, b.command, SEPARATOR, *b.expected]]
    return "\n".join(expected + tail) + "\n", "\n".join(out + tail) + "\n"
