"""Small file primitives with explicit durability: whole writes, directory fsync,
atomic replacement."""
from __future__ import annotations

import os
from pathlib import Path

TMP_SUFFIX = ".tmp"
_IOV_MAX = os.sysconf("SC_IOV_MAX") if hasattr(os, "sysconf") else 1024


def write_all(fd: int, data: bytes | bytearray | memoryview) -> None:
    """os.write until every byte is written (a single write may be short)."""
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


def writev_all(fd: int, views: list[memoryview]) -> None:
    """os.writev until every byte of ``views`` (in order) is written."""
    views = list(views)
    while views:
        n = os.writev(fd, views[:_IOV_MAX])
        while views and n >= len(views[0]):
            n -= len(views.pop(0))
        if n:
            views[0] = views[0][n:]


def fsync_dir(path: Path) -> None:
    """Make creations, renames and deletions of entries in ``path`` durable."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def replace_atomically(path: Path, data: bytes | list, durable: bool) -> None:
    """Replace ``path`` by a file holding ``data`` (bytes, or parts written in order):
    a reader (or a restart after a crash) sees the old content or the new, never a mix.

    Write ``path.tmp``, fsync it, rename it over ``path``, fsync the directory. With
    ``durable=False`` the fsyncs are skipped: after a machine crash the file may be
    missing or empty (its checksum then fails on load).
    """
    tmp = path.with_name(path.name + TMP_SUFFIX)
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    try:
        if type(data) is list:
            writev_all(fd, [memoryview(part) for part in data])
        else:
            write_all(fd, data)
        if durable:
            os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)
    if durable:
        fsync_dir(path.parent)
