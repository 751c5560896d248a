"""The deterministic work-queue state machine applied from the Raft log.

Public API: ``QueueMachine`` (apply, snapshot/restore, read-only queries) and the
``commands`` module (command constructors and error codes).
"""
from . import commands
from .machine import QueueMachine

__all__ = ["QueueMachine", "commands"]
