"""Field checks for command dicts: each returns the value or raises ``BadRequest``.

A command comes from a client through the log, so nothing in it is trusted; a bad field
becomes a ``bad_request`` result, never an exception out of ``apply``.
"""
from __future__ import annotations


class BadRequest(Exception):
    """A command field is missing or malformed; the message is one line for the client."""


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


# Each check tests the common case first by exact type (applied once per command on every node).


def text(cmd: dict, key: str) -> str:
    value = cmd.get(key)
    if type(value) is str and value:
        return value
    if not isinstance(value, str) or not value:
        raise BadRequest(f"{key!r} must be a non-empty string")
    return value


def ident(cmd: dict, key: str, *, optional: bool = False) -> str | int | None:
    """An identifier chosen by a client (producer, worker, request): a string or an int."""
    value = cmd.get(key)
    if value is None and optional:
        return None
    if not ((isinstance(value, str) and value) or _is_int(value)):
        raise BadRequest(f"{key!r} must be a non-empty string or an integer")
    return value


def integer(cmd: dict, key: str, *, minimum: int = 0, optional: bool = False, default: int = 0) -> int:
    value = cmd.get(key)
    if type(value) is int and value >= minimum:
        return value
    if value is None and optional:
        return default
    if not _is_int(value) or value < minimum:
        raise BadRequest(f"{key!r} must be an integer >= {minimum}")
    return value


def integers(cmd: dict, key: str) -> list[int]:
    value = cmd.get(key)
    if not isinstance(value, (list, tuple)) or not all(_is_int(v) and v >= 0 for v in value):
        raise BadRequest(f"{key!r} must be a list of integers >= 0")
    return list(value)


def blob(cmd: dict, key: str) -> bytes:
    value = cmd.get(key)
    if type(value) is bytes:
        return value
    if isinstance(value, (bytearray, memoryview)):
        return bytes(value)
    if not isinstance(value, bytes):
        raise BadRequest(f"{key!r} must be bytes")
    return value


def reason(cmd: dict, key: str) -> str:
    value = cmd.get(key, "")
    if value is None:
        return ""
    if not isinstance(value, str):
        raise BadRequest(f"{key!r} must be a string")
    return value
