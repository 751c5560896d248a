"""Run one node as a process until SIGTERM or SIGINT (``logqueue node``)."""
from __future__ import annotations

import asyncio
import logging
import signal

from logqueue.runtime.node import Node, NodeConfig

log = logging.getLogger("logqueue.node")


def serve(cfg: NodeConfig) -> int:
    """Run the node on uvloop when installed; returns the process exit code."""
    try:
        import uvloop
    except ImportError:  # optional speed-up (extra "fast")
        return asyncio.run(_serve(cfg))
    return uvloop.run(_serve(cfg))


async def _serve(cfg: NodeConfig) -> int:
    node = Node(cfg)
    await node.start()
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    stopping = loop.create_task(stop.wait())
    failed = loop.create_task(node.stopped.wait())
    await asyncio.wait([stopping, failed], return_when=asyncio.FIRST_COMPLETED)
    code = 1 if node.stopped.is_set() else 0
    stopping.cancel()
    failed.cancel()
    log.info("node %d stopping", cfg.node_id)
    await node.stop()
    return code
