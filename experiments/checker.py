"""The checker: a pure function from a run's event history to its ``summary.json``.

Like Maelstrom's checkers, :func:`check` reads nothing but the events, so an old
history can be checked again (:func:`recheck`, or ``python -m experiments.checker DIR``).
Events are those of DESIGN.md "Experiment records"; the checker also reads two kinds the
runner writes so that *every* field of ``summary.json`` comes from the history:

- ``{"ev": "note", "text": ...}``: a remark for ``notes`` (e.g. a backend's documented
  reason why a fault cannot bite);
- ``{"ev": "status", "status": "n/a"|"error", "reason": ...}``: the scenario did not
  apply to the backend, or the run broke; the figures are then those of what was recorded;
- ``{"ev": "enqueue_unknown", "job": ..., "reason": ...}``: the producer sent ``job`` but
  could not learn whether the backend took it (a timeout, a connection lost: any error
  raised by ``enqueue`` itself, after the request may have left). Jepsen's ``:info``
  enqueue. The producer retries with the same job id, so a later ``produce`` of the job
  may follow; an error while connecting (nothing was sent) records nothing.
- ``{"ev": "setup", "func": ..., "sink": {"kind", "database", "table"}, "confirms":
  {"replicas", "confirmed_on", "durability"}}``: what the workers ran, where effects went
  and what the backend's confirm promises (its class's declaration: on how many of its
  nodes a confirmed job is), copied into the summary (``sink`` defaults to the file
  sink, ``confirms`` to ``null``). With a PostgreSQL sink the ``effect`` events are the table's rows, read back at
  the end of the run, so effect counts are what the table holds.

Definitions (events are ordered by ``t``; a "job" is a ``job`` value that was produced):

- ``jobs``: distinct jobs with a ``produce`` event (confirmed by the backend).
- ``completed``: jobs with at least one ``effect``. ``lost``: jobs with none.
- A job was **attempted** when it has a ``produce`` or an ``enqueue_unknown`` event.
- ``indeterminate``: attempted jobs that were never confirmed (``enqueue_unknown``, no
  ``produce``: the producer gave up on them); ``recovered``: those of them with an
  ``effect`` (the enqueue had in fact taken). Neither counts in ``jobs`` or ``lost``.
- ``unexpected``: distinct jobs with an ``effect`` that were never attempted.
- ``duplicate_executions``: over attempted jobs, ``finish`` events beyond the first.
- ``redeliveries``: over attempted jobs, ``deliver`` events beyond the first (the
  re-queue cascade, whether or not the job ran again).
- ``duplicate_effects``: over attempted jobs, ``effect`` events beyond the first.
- ``latency_ms``: per completed job, first ``effect`` minus first ``produce`` (floored at
  0: a fast worker may beat the publisher confirm); ``p50``/``p99`` by nearest rank (the
  ``ceil(q * n)``-th smallest), and ``max``. ``null`` when nothing completed.
- ``replayed``: distinct produced jobs with a ``replay`` event (the ``replay`` scenario:
  jobs a new reader got back from the start of the history).
- ``throughput_jobs_per_s``: ``completed`` divided by the seconds from the first
  ``produce`` to the last first-``effect``; ``null`` when that span is empty.
- A fault is a ``fault_start`` paired with the next ``fault_end`` of the same ``fault``
  and ``target`` (unpaired: it lasts to the end of the history). ``faults`` has one entry
  per ``fault_start`` event, so its length is the number of faults.
- A job is **interrupted** by a fault starting at ``t0`` when, at ``t0``, it had been
  delivered (a ``deliver`` with ``t <= t0``) and had no ``effect`` yet (none with
  ``t <= t0``) - it was in flight. When the fault's ``target`` is a worker (it names the
  ``worker`` of some event), only jobs whose latest delivery before ``t0`` went to that
  worker count: a crash of worker A does not interrupt worker B's job.
- A fault's recovery is the time from ``t0`` to the first ``effect`` of the *last* of its
  interrupted jobs to get one, i.e. until every job the fault interrupted had its effect.
  ``recovery_ms`` is the largest over faults; ``null`` when no fault interrupted a job,
  or when an interrupted job never got an effect (the notes say which).

All times in ms and rates are rounded to 3 decimals, so a recomputation is exactly equal.
``anomalies`` lists the job ids of each anomaly by name: ``lost``,
``duplicate-execution``, ``duplicate-effect``, ``phantom`` (an effect or finish for a
job that was never attempted), ``late-ack`` (an ``ack`` or ``ack_error`` from a worker
whose delivery had been superseded: the job's latest delivery before it went to another
worker -- the seed's "then the network returns and consumer A sends the ACK"),
``ack-error`` (the backend refused a completion: ``fenced``, channel closed, ...),
``dead-letter``.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
from collections import defaultdict
from collections.abc import Iterable
from pathlib import Path

from experiments import aggregate
from experiments.recorder import JsonlError, read_jsonl
from logqueue.stats import nearest_rank

EVENTS_FILE = "events.jsonl"
SUMMARY_FILE = aggregate.SUMMARY_FILE
ANOMALIES = ("lost", "duplicate-execution", "duplicate-effect", "phantom", "late-ack", "ack-error", "dead-letter")


class CheckerError(ValueError):
    """A history that cannot be read; the message names the file and line."""


def _ms(seconds: float) -> float:
    return round(seconds * 1000.0, 3)


def _faults(events: list[dict]) -> list[dict]:
    """Pair fault_start/fault_end by (fault, target), in order."""
    faults: list[dict] = []
    open_: dict[tuple, list[dict]] = defaultdict(list)
    for e in events:
        if e["ev"] == "fault_start":
            f = {"fault": e.get("fault", "?"), "target": e.get("target"), "start": e["t"], "end": None}
            faults.append(f)
            open_[(f["fault"], f["target"])].append(f)
        elif e["ev"] == "fault_end":
            pending = open_.get((e.get("fault", "?"), e.get("target")))
            if pending:
                pending.pop(0)["end"] = e["t"]
    return faults


def check(events: Iterable[dict], backend: str, scenario: str) -> dict:
    """Compute ``summary.json`` from a history (see the module docstring for definitions).

    Args:
        events: event dicts with at least ``t`` and ``ev``, in any order.
        backend, scenario: copied into the summary.

    Returns:
        The summary dict: ``backend``, ``scenario``, ``status``, ``jobs``, ``completed``,
        ``func``, ``sink``, ``lost``, ``duplicate_executions``, ``duplicate_effects``, ``redeliveries``,
        ``unexpected``, ``recovered``, ``indeterminate``, ``replayed``, ``throughput_jobs_per_s``,
        ``latency_ms``, ``recovery_ms``, ``faults``, ``anomalies``, ``notes``.
    """
    # A stable sort keeps the file order of events recorded within the same clock tick.
    history = sorted(events, key=lambda e: e["t"])
    produced: dict[str, float] = {}
    unknown: set[str] = set()  # jobs with an enqueue of unknown outcome
    first_effect: dict[str, float] = {}
    effects: dict[str, list[dict]] = defaultdict(list)
    finishes: dict[str, int] = defaultdict(int)
    deliveries: dict[str, list[dict]] = defaultdict(list)
    workers: set[str] = set()
    status, reason, notes = "ok", None, []
    setup = {"func": None, "sink": {"kind": "file", "database": None, "table": None}, "confirms": None}
    late_acks, ack_errors, dead, replayed = set(), set(), set(), set()

    for e in history:
        ev, job = e["ev"], e.get("job")
        if "worker" in e:
            workers.add(str(e["worker"]))
        if ev == "produce":
            produced.setdefault(job, e["t"])
        elif ev == "enqueue_unknown":
            unknown.add(job)
        elif ev == "deliver":
            deliveries[job].append(e)
        elif ev == "finish":
            finishes[job] += 1
        elif ev == "effect":
            effects[job].append(e)
            first_effect.setdefault(job, e["t"])
        elif ev in ("ack", "ack_error"):
            latest = deliveries.get(job)
            if latest and latest[-1].get("worker") != e.get("worker"):
                late_acks.add(job)
            if ev == "ack_error":
                ack_errors.add(job)
        elif ev == "dead_letter":
            dead.add(job)
        elif ev == "replay":
            replayed.add(job)
        elif ev == "note":
            notes.append(str(e.get("text", "")))
        elif ev == "status":
            status, reason = str(e.get("status", "error")), e.get("reason")
        elif ev == "setup":
            setup.update({key: e[key] for key in setup if key in e})

    attempted = set(produced) | unknown
    phantom = (set(effects) | set(finishes)) - attempted
    indeterminate = unknown - set(produced)

    jobs = sorted(produced)
    completed = [j for j in jobs if j in first_effect]
    lost = [j for j in jobs if j not in first_effect]
    dup_exec = {j: n - 1 for j, n in finishes.items() if n > 1 and j in attempted}
    dup_eff = {j: len(v) - 1 for j, v in effects.items() if len(v) > 1 and j in attempted}

    latencies = sorted(max(0.0, first_effect[j] - produced[j]) for j in completed)
    latency = None
    if latencies:
        latency = {
            "p50": _ms(nearest_rank(latencies, 0.50)),
            "p99": _ms(nearest_rank(latencies, 0.99)),
            "max": _ms(latencies[-1]),
        }
    throughput = None
    if completed:
        span = max(first_effect[j] for j in completed) - min(produced.values())
        if span > 0:
            throughput = round(len(completed) / span, 3)

    faults = []
    recoveries = []
    for f in _faults(history):
        t0, target = f["start"], f["target"]
        interrupted = []
        for job in jobs:
            before = [d for d in deliveries.get(job, []) if d["t"] <= t0]
            if not before or (job in first_effect and first_effect[job] <= t0):
                continue
            if target in workers and before[-1].get("worker") != target:
                continue
            interrupted.append(job)
        unrecovered = [j for j in interrupted if j not in first_effect]
        recovery = None
        if interrupted and not unrecovered:
            recovery = _ms(max(first_effect[j] for j in interrupted) - t0)
            recoveries.append(recovery)
        label = f"{f['fault']} on {target}" if target else f["fault"]
        if not interrupted:
            notes.append(f"{label}: no job was in flight at its start, so no recovery time")
        elif unrecovered:
            notes.append(f"{label}: {len(unrecovered)} interrupted job(s) never took effect")
        faults.append({
            **f,
            "duration_ms": None if f["end"] is None else _ms(f["end"] - t0),
            "interrupted": len(interrupted),
            "recovery_ms": recovery,
        })

    if phantom:
        notes.append(f"{len(phantom)} job(s) took effect or finished without a produce or enqueue_unknown event")
    anomalies = {
        "lost": lost,
        "duplicate-execution": sorted(dup_exec),
        "duplicate-effect": sorted(dup_eff),
        "phantom": sorted(phantom),
        "late-ack": sorted(late_acks),
        "ack-error": sorted(ack_errors),
        "dead-letter": sorted(dead),
    }
    summary = {
        "backend": backend,
        "scenario": scenario,
        "status": status,
        "func": setup["func"],
        "sink": setup["sink"],
        "confirms": setup["confirms"],
        "jobs": len(jobs),
        "completed": len(completed),
        "lost": len(lost),
        "duplicate_executions": sum(dup_exec.values()),
        "duplicate_effects": sum(dup_eff.values()),
        "redeliveries": sum(len(v) - 1 for j, v in deliveries.items() if j in attempted),
        "unexpected": len(phantom & set(effects)),
        "recovered": len(indeterminate & set(effects)),
        "indeterminate": len(indeterminate),
        "replayed": len(replayed & set(produced)),
        "throughput_jobs_per_s": throughput,
        "latency_ms": latency,
        "recovery_ms": max(recoveries) if recoveries else None,
        "faults": faults,
        "anomalies": anomalies,
        "notes": notes,
    }
    if reason is not None:
        summary["reason"] = str(reason)
    return summary


def load_events(path: str | os.PathLike) -> list[dict]:
    """Read an ``events.jsonl``. A torn last line (a writer killed mid-line) is skipped.

    Raises:
        CheckerError: a malformed line before the last, or an event without ``t``/``ev``.
    """
    path = Path(path)
    try:
        objects = read_jsonl(path)
    except OSError as exc:
        raise CheckerError(f"cannot read {path}: {exc.strerror or exc}") from None
    except JsonlError as exc:
        raise CheckerError(str(exc)) from None
    for number, event in enumerate(objects, start=1):
        if not isinstance(event.get("t"), (int, float)) or "ev" not in event:
            raise CheckerError(f"{path}: event {number}: an event needs a numeric 't' and an 'ev'")
    return objects


def check_dir(run_dir: str | os.PathLike, backend: str | None = None, scenario: str | None = None) -> dict:
    """Check ``run_dir/events.jsonl``; backend and scenario default to the cell's path parts.

    The cell is ``run_dir``, or its parent for a trial (``<backend>/<scenario>/trial-<k>``).
    """
    run_dir = Path(run_dir)
    cell = run_dir.parent if aggregate.TRIAL_DIR.fullmatch(run_dir.name) else run_dir
    return check(load_events(run_dir / EVENTS_FILE), backend or cell.parent.name, scenario or cell.name)


def write_summary(run_dir: str | os.PathLike, backend: str | None = None, scenario: str | None = None) -> dict:
    """Compute the summary of ``run_dir`` from its events alone and write ``summary.json``."""
    summary = check_dir(run_dir, backend, scenario)
    (Path(run_dir) / SUMMARY_FILE).write_text(json.dumps(summary, indent=2) + "\n")
    return summary


def recheck(run_dir: str | os.PathLike) -> list[str]:
    """Recompute ``run_dir``'s summary from its events and compare with ``summary.json``.

    Returns:
        One line per differing field (``field: recorded X, recomputed Y``); empty when equal.

    Raises:
        CheckerError: a missing or unreadable file.
    """
    run_dir = Path(run_dir)
    try:
        recorded = json.loads((run_dir / SUMMARY_FILE).read_text())
    except (OSError, ValueError) as exc:
        raise CheckerError(f"cannot read {run_dir / SUMMARY_FILE}: {exc}") from None
    fresh = check_dir(run_dir, recorded.get("backend"), recorded.get("scenario"))
    return [
        f"{key}: recorded {recorded.get(key)!r}, recomputed {fresh.get(key)!r}"
        for key in sorted(set(recorded) | set(fresh))
        if recorded.get(key) != fresh.get(key)
    ]


def confirms_label(confirms: dict | None) -> str:
    """Whether a run's confirms are replicated, from the ``confirms`` its history recorded (the backend
    class's declaration; a cell's aggregate copies it): ``replicated: 2 of 3 nodes``, ``not replicated
    (1 node)``, or ``unknown`` for a history from before runs recorded it."""
    if not confirms:
        return "unknown"
    on, of = confirms.get("confirmed_on", 1), confirms.get("replicas", 1)
    return f"replicated: {on} of {of} nodes" if on > 1 else f"not replicated ({of} node{'s' if of > 1 else ''})"


def recheck_aggregate(cell_dir: str | os.PathLike) -> list[str]:
    """Recompute ``cell_dir/aggregate.json`` from its trials' events; one line per differing field.

    Raises:
        CheckerError: a missing or unreadable file.
    """
    cell_dir = Path(cell_dir)
    try:
        recorded = json.loads((cell_dir / aggregate.AGGREGATE_FILE).read_text())
    except (OSError, ValueError) as exc:
        raise CheckerError(f"cannot read {cell_dir / aggregate.AGGREGATE_FILE}: {exc}") from None
    fresh = aggregate.aggregate([check_dir(run, recorded.get("backend"), recorded.get("scenario"))
                                 for run in aggregate.trial_dirs(cell_dir)])
    return [
        f"{key}: recorded {recorded.get(key)!r}, recomputed {fresh.get(key)!r}"
        for key in sorted(set(recorded) | set(fresh))
        if recorded.get(key) != fresh.get(key)
    ]


def find_runs(out_dir: str | os.PathLike) -> list[Path]:
    """Every run directory of one results directory: ``<backend>/<scenario>`` with an events
    file, or each ``<backend>/<scenario>/trial-<k>`` of a cell run with ``--trials N``."""
    out_dir = Path(out_dir)
    trials = [p.parent for p in out_dir.glob(f"*/*/*/{EVENTS_FILE}") if aggregate.TRIAL_DIR.fullmatch(p.parent.name)]
    return sorted([p.parent for p in out_dir.glob(f"*/*/{EVENTS_FILE}")] + trials)


def find_all(root: str | os.PathLike) -> tuple[list[Path], list[Path]]:
    """Every run directory (an events file) and every cell with an aggregate under ``root``, at any depth.

    That covers single runs, trials (``<cell>/trial-<k>``) and sweeps (``<param>=<value>/<cell>``).
    """
    root = Path(root)
    return (sorted(p.parent for p in root.rglob(EVENTS_FILE)),
            sorted(p.parent for p in root.rglob(aggregate.AGGREGATE_FILE)))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m experiments.checker",
        description="Recompute every summary.json under DIR from its events.jsonl, and every "
                    "aggregate.json from its trials' events, and report differences.",
    )
    parser.add_argument("dir", help="a results directory (OUT, a sweep's OUT, or one run or cell in it)")
    args = parser.parse_args(argv)
    runs, cells = find_all(args.dir)
    if not runs:
        print(f"error: no {EVENTS_FILE} under {args.dir}", file=sys.stderr)
        return 2
    bad = 0
    for path, recompute in [(run, recheck) for run in runs] + [(cell, recheck_aggregate) for cell in cells]:
        try:
            diffs = recompute(path)
        except CheckerError as exc:
            diffs = [str(exc)]
        bad += bool(diffs)
        print(f"{'ok      ' if not diffs else 'MISMATCH'} {path / (SUMMARY_FILE if recompute is recheck else aggregate.AGGREGATE_FILE)}")
        for line in diffs:
            print(f"    {line}")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
