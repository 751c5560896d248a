"""Failure scenarios, one module each; the registry the runner uses (``--scenarios LIST|all``).

The order is DESIGN.md's table: the seed's four first, then the log-specific ones.
"""
from __future__ import annotations

import importlib

SCENARIOS = {
    "consumer-crash": "experiments.scenarios.consumer_crash:ConsumerCrash",
    "slow-consumer": "experiments.scenarios.slow_consumer:SlowConsumer",
    "consumer-partition": "experiments.scenarios.consumer_partition:ConsumerPartition",
    "broker-partition": "experiments.scenarios.broker_partition:BrokerPartition",
    "leader-crash": "experiments.scenarios.leader_crash:LeaderCrash",
    "follower-lag": "experiments.scenarios.follower_lag:FollowerLag",
    "broker-restart": "experiments.scenarios.broker_restart:BrokerRestart",
    "replay": "experiments.scenarios.replay:Replay",
    "rolling-restart": "experiments.scenarios.rolling_restart:RollingRestart",
}


class UnknownScenario(ValueError):
    """A scenario name that is not registered."""


def parse_scenarios(spec: str) -> list[str]:
    """``"a,b"`` or ``"all"`` -> scenario names in the order given; unknown names raise."""
    chosen: list[str] = []
    for part in (p.strip() for p in spec.split(",")):
        if not part:
            continue
        for name in (list(SCENARIOS) if part == "all" else [part]):
            if name not in SCENARIOS:
                raise UnknownScenario(f"unknown scenario {name!r}; known: {', '.join(SCENARIOS)} (or 'all')")
            if name not in chosen:
                chosen.append(name)
    if not chosen:
        raise UnknownScenario("no scenario named; use NAME,NAME or 'all'")
    return chosen


def get(name: str):
    """A new instance of the scenario registered as ``name``."""
    if name not in SCENARIOS:
        raise UnknownScenario(f"unknown scenario {name!r}; known: {', '.join(SCENARIOS)} (or 'all')")
    module, _, cls = SCENARIOS[name].partition(":")
    return getattr(importlib.import_module(module), cls)()
