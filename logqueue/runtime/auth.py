"""The connection handshake and the optional shared-secret HMAC challenge.

On every new connection the accepting node speaks first::

    node   -> [HELLO, node_id, nonce]                 nonce: 32 fresh random bytes
    caller -> [AUTH, kind, peer_id, listen, mac]      kind: "peer" or "client"
    node   -> [WELCOME]                               or the connection is closed

With a cluster secret, ``mac = HMAC-SHA256(secret, nonce | kind | peer_id)``; the nonce
is fresh per connection, so a recorded handshake cannot be replayed. Without a secret
the mac is empty and any caller is admitted (loopback or trusted networks only).
"""
from __future__ import annotations

import hashlib
import hmac
import os
from pathlib import Path

from logqueue.runtime import wire

KINDS = ("peer", "client")


class AuthError(ValueError):
    """A handshake that must be refused; the reason is one line."""


def load_secret(path: str | os.PathLike) -> bytes:
    """Read a secret file (surrounding whitespace stripped); AuthError if unusable."""
    try:
        secret = Path(path).read_bytes().strip()
    except OSError as exc:
        raise AuthError(f"cannot read secret file {path}: {exc.strerror}") from None
    if len(secret) < 16:
        raise AuthError(f"secret file {path} holds {len(secret)} bytes; use at least 16")
    return secret


def new_nonce() -> bytes:
    return os.urandom(32)


def mac(secret: bytes | None, nonce: bytes, kind: str, peer_id: int) -> bytes:
    if secret is None:
        return b""
    return hmac.new(secret, nonce + kind.encode() + b"|" + str(peer_id).encode(), hashlib.sha256).digest()


def hello(node_id: int, nonce: bytes) -> list:
    return [wire.HELLO, node_id, nonce]


def parse_hello(body: list) -> tuple[int, bytes]:
    """(node_id, nonce) of a HELLO body."""
    if len(body) != 3 or body[0] != wire.HELLO or type(body[1]) is not int or type(body[2]) is not bytes:
        raise AuthError("expected a HELLO frame")
    return body[1], body[2]


def auth(secret: bytes | None, nonce: bytes, kind: str, peer_id: int = 0, listen: str = "") -> list:
    return [wire.AUTH, kind, peer_id, listen, mac(secret, nonce, kind, peer_id)]


def check_auth(body: list, secret: bytes | None, nonce: bytes) -> tuple[str, int, str]:
    """Verify an AUTH body against our nonce; returns (kind, peer_id, listen address)."""
    if len(body) != 5 or body[0] != wire.AUTH:
        raise AuthError("expected an AUTH frame first")
    _, kind, peer_id, listen, their_mac = body
    if kind not in KINDS or type(peer_id) is not int or type(listen) is not str or type(their_mac) is not bytes:
        raise AuthError("malformed AUTH frame")
    if secret is not None and not hmac.compare_digest(their_mac, mac(secret, nonce, kind, peer_id)):
        raise AuthError(f"authentication failed for {kind} {peer_id}: wrong cluster secret")
    return kind, peer_id, listen
