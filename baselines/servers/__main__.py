"""``python -m baselines.servers SYSTEM DIR``: run a private cluster until Ctrl-C, printing what clients need.

Prints the ``export`` lines that point the matching backend at the cluster, then waits;
Ctrl-C or SIGTERM stops every node (and so does killing this process: see the reaper in
``baselines.servers.nodes``).
"""
from __future__ import annotations

import argparse
import shlex
import signal
import sys
import threading


def _systems() -> dict:
    from baselines import nats_jetstream_cluster, rabbitmq_quorum_cluster, redis_sentinel
    from baselines.servers.nats_cluster import NatsCluster
    from baselines.servers.rabbitmq_cluster import RabbitMQCluster
    from baselines.servers.redis_sentinel import RedisSentinelCluster

    return {
        "rabbitmq-cluster": (RabbitMQCluster, rabbitmq_quorum_cluster.client_env, "rabbitmq-quorum-cluster"),
        "nats-cluster": (NatsCluster, nats_jetstream_cluster.client_env, "nats-jetstream-cluster"),
        "redis-sentinel": (RedisSentinelCluster, redis_sentinel.client_env, "redis-sentinel"),
    }


def main(argv: list[str] | None = None) -> int:
    from baselines.servers.nodes import ClusterError, ClusterUnavailable

    systems = _systems()
    p = argparse.ArgumentParser(prog="python -m baselines.servers",
                                description="Run a private 3-node cluster on free loopback ports until Ctrl-C.")
    p.add_argument("system", choices=list(systems), help="which cluster")
    p.add_argument("dir", help="directory for the nodes' data and logs (created if missing)")
    args = p.parse_args(argv)
    cls, client_env, backend = systems[args.system]
    cluster = cls(args.dir)
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    try:
        cluster.start()
    except (ClusterUnavailable, ClusterError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 3
    try:
        print(f"# {args.system}: {cluster.size} nodes up in {cluster.start_seconds:.1f} s; for --backends {backend}:")
        for name, value in client_env(cluster).items():
            print(f"export {name}={shlex.quote(value)}")
        sys.stdout.flush()
        stop.wait()
    finally:
        cluster.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
