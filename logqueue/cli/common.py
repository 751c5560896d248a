"""Helpers every command module of ``logqueue`` shares: argument types, the options
that commands talking to a cluster take, the client they open, and output helpers."""
from __future__ import annotations

import argparse
import base64
import os
import sys
import time
from pathlib import Path

from logqueue.client import Client, parse_cluster
from logqueue.runtime.auth import load_secret
from logqueue.runtime.transport import split_address


class UsageError(ValueError):
    """Bad command-line input (exit status 2)."""


# --- argument types -----------------------------------------------------------------------


def address(text: str) -> str:
    try:
        split_address(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    return text


def peers(text: str) -> dict[int, str]:
    """'1=h:p,2=h:p' -> {1: 'h:p', 2: 'h:p'}."""
    out: dict[int, str] = {}
    for item in filter(None, (s.strip() for s in text.split(","))):
        ident, sep, addr = item.partition("=")
        if not sep or not ident.isdigit() or int(ident) <= 0:
            raise argparse.ArgumentTypeError(f"bad peer {item!r}: expected ID=HOST:PORT with a positive integer ID")
        if int(ident) in out:
            raise argparse.ArgumentTypeError(f"peer id {ident} is given twice")
        out[int(ident)] = address(addr)
    if not out:
        raise argparse.ArgumentTypeError("no peers given: expected ID=HOST:PORT[,ID=HOST:PORT...]")
    return out


def ms_range(text: str) -> tuple[int, int]:
    low, sep, high = text.partition("-")
    if not (sep and low.isdigit() and high.isdigit()) or not 0 < int(low) <= int(high):
        raise argparse.ArgumentTypeError(f"bad range {text!r}: expected LOW-HIGH milliseconds with 0 < LOW <= HIGH")
    return int(low), int(high)


def positive(text: str) -> int:
    if not text.isdigit() or int(text) <= 0:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}")
    return int(text)


def non_negative(text: str) -> int:
    if not text.isdigit():
        raise argparse.ArgumentTypeError(f"expected an integer >= 0, got {text!r}")
    return int(text)


def cluster(text: str) -> list[str]:
    try:
        return parse_cluster(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


# --- options and what they give ------------------------------------------------------------


def secret_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument("--secret-file", metavar="F", help="file holding the cluster's shared secret (>= 16 bytes)")


def cluster_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument("--cluster", required=True, type=cluster, metavar="HOST:PORT,...",
                   help="addresses of some nodes of the cluster (any one that answers finds the leader)")
    p.add_argument("--timeout", type=float, default=30.0, metavar="S",
                   help="seconds to keep retrying before giving up (default 30)")
    secret_arg(p)


def secret(args) -> bytes | None:
    return load_secret(args.secret_file) if args.secret_file else None


def open_client(args, **kwargs) -> Client:
    return Client(args.cluster, secret=secret(args), timeout=args.timeout, **kwargs)


def payloads(args) -> list[bytes]:
    """The records of ``--from-file`` (one per line, '-' for stdin) or ``--count`` generated ones."""
    if args.from_file is not None:
        if args.from_file == "-":
            data = sys.stdin.buffer.read()
        else:
            try:
                data = Path(args.from_file).read_bytes()
            except OSError as exc:
                raise UsageError(f"cannot read {args.from_file}: {exc.strerror}") from None
        return data.splitlines()
    stamp = f"{os.getpid()}-{time.time_ns()}"
    out = []
    for n in range(args.count):
        head = f"{stamp}-{n}-".encode()
        out.append((head + b"x" * max(0, args.payload_bytes - len(head)))[: max(args.payload_bytes, len(head))])
    return out


# --- output ---------------------------------------------------------------------------------


def text_field(row: dict, key: str, data: bytes) -> dict:
    """Put ``data`` in ``row[key]`` as UTF-8 text, or as base64 with ``"encoding": "base64"``."""
    try:
        row[key] = data.decode("utf-8")
    except UnicodeDecodeError:
        row[key] = base64.b64encode(data).decode("ascii")
        row["encoding"] = "base64"
    return row


def print_table(table) -> None:
    """Print a rich ``Table`` on stdout, without wrapping when stdout is not a terminal."""
    from rich.console import Console

    Console(width=None if sys.stdout.isatty() else 200).print(table)
