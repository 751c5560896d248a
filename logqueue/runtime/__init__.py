"""The asyncio node that drives the Raft core over TCP with durable storage.

Public API: ``Node`` and ``NodeConfig`` (``node``), ``run_node`` (``main``); the wire
format is in ``wire``, the handshake in ``auth``, client operations in ``service``.
"""
from logqueue.runtime.node import Node, NodeConfig

__all__ = ["Node", "NodeConfig"]
