"""Failure scenarios, one module each; the registry the runner uses (``--scenarios LIST|all``).

The order is DESIGN.md's table: the seed's four first, then the log-specific ones; then
the scenarios of installed distributions, registered under the entry-point group
``logqueue.scenarios`` (``name = "module:Class"``, a ``Scenario`` subclass).
"""
from __future__ import annotations

from baselines.plugins import PluginLoadError, Registry

ENTRY_POINT_GROUP = "logqueue.scenarios"

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


REGISTRY = Registry("scenario", SCENARIOS, ENTRY_POINT_GROUP, UnknownScenario)


def names() -> list[str]:
    """Every registered scenario: the built-ins, then the plug-ins."""
    return REGISTRY.names()


def parse_scenarios(spec: str) -> list[str]:
    """``"a,b"`` or ``"all"`` -> scenario names in the order given; unknown names raise."""
    return REGISTRY.parse(spec)


def get(name: str):
    """A new instance of the scenario registered as ``name``.

    Raises:
        UnknownScenario: the name is not registered.
        PluginLoadError: it cannot be loaded (one line naming it).
    """
    from experiments.scenarios.base import Scenario

    cls = REGISTRY.load(name)
    if not (isinstance(cls, type) and issubclass(cls, Scenario)):
        raise PluginLoadError(f"{name}: registered as {cls!r}, which is not an experiments Scenario subclass")
    return cls()
