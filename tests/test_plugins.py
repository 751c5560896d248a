"""Backends and scenarios from another distribution run through ``python -m experiments run``.

The distribution is a throwaway one: a directory on ``PYTHONPATH`` holding its module and
a ``*.dist-info`` with ``entry_points.txt``, which ``importlib.metadata`` finds as an
installed distribution. It registers a backend, a scenario, and one broken plug-in of
each kind; the broken ones give one line naming them while the others run.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import pytest

from tests.conftest import require_server

PLUGIN = textwrap.dedent('''
    """A third-party backend and scenario (the README shows the same)."""
    import os
    import signal

    from baselines.redis_list import RedisListBackend
    from experiments import Scenario


    class MyRedis(RedisListBackend):
        """The reliable-list adapter under a name of its own: what a plug-in adapter declares."""
        name = "my-redis"
        durability = "LPUSH reply (a plug-in's own line)"


    class PauseWorker(Scenario):
        """SIGSTOP a busy worker for fault_s, then SIGCONT: a frozen process, not a dead one."""
        name = "pause-worker"
        summary = "freeze a busy worker, then let it go on"

        def inject(self, ctx):
            self.target = self.busy_worker(ctx)
            ctx.fault_start("pause", self.target)
            os.kill(ctx.workers[self.target].pid, signal.SIGSTOP)

        def heal(self, ctx):
            ctx.sleep(ctx.params.fault_s)
            os.kill(ctx.workers[self.target].pid, signal.SIGCONT)
            ctx.fault_end("pause", self.target)
''')

ENTRY_POINTS = textwrap.dedent('''
    [logqueue.backends]
    my-redis = throwaway_plugin:MyRedis
    broken-backend = no_such_module_for_a_test:Nope

    [logqueue.scenarios]
    pause-worker = throwaway_plugin:PauseWorker
    broken-scenario = throwaway_plugin:NoSuchScenario
''')


@pytest.fixture
def plugin_env(tmp_path):
    site = tmp_path / "site"
    info = site / "throwaway_plugins-0.1.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: throwaway-plugins\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text(ENTRY_POINTS)
    (site / "throwaway_plugin.py").write_text(PLUGIN)
    return {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(site), os.environ.get("PYTHONPATH")]))}


def experiments(env, *args, timeout=300) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "experiments", *args], env=env, capture_output=True, text=True,
                          timeout=timeout)


def test_help_lists_plugins_and_names_a_broken_one_in_one_line(plugin_env, tmp_path):
    done = experiments(plugin_env, "run", "--help", timeout=60)
    assert done.returncode == 0, done.stderr
    text = " ".join(done.stdout.split())
    assert "my-redis" in text and "pause-worker freeze a busy worker" in text
    assert ("broken-scenario (cannot be loaded: broken-scenario: plug-in throwaway_plugin:NoSuchScenario "
            "(from throwaway-plugins) cannot be loaded: AttributeError") in text


def test_a_plugin_backend_and_scenario_run_and_a_broken_backend_is_skipped(plugin_env, tmp_path):
    require_server("redis")
    out = tmp_path / "out"
    done = experiments(plugin_env, "run", "--backends", "my-redis,broken-backend",
                       "--scenarios", "pause-worker,consumer-crash,broken-scenario", "--out", str(out),
                       "--quick", "--jobs", "12", "--load-s", "2", "--fault-start-s", "0.5", "--fault-s", "2")
    text = " ".join(done.stdout.split())
    assert ("skipping broken-backend: broken-backend: plug-in no_such_module_for_a_test:Nope "
            "(from throwaway-plugins) cannot be loaded: ModuleNotFoundError") in text
    assert done.returncode == 1, done.stdout + done.stderr  # the broken scenario's run failed, alone
    for scenario in ("pause-worker", "consumer-crash"):
        s = json.loads((out / "my-redis" / scenario / "summary.json").read_text())
        assert s["status"] == "ok" and s["backend"] == "my-redis", s
        assert s["completed"] == s["jobs"] == 12 and s["lost"] == 0
    (fault,) = json.loads((out / "my-redis" / "pause-worker" / "summary.json").read_text())["faults"]
    assert fault["fault"] == "pause" and fault["end"] is not None
    broken = json.loads((out / "my-redis" / "broken-scenario" / "summary.json").read_text())
    assert broken["status"] == "error" and "plug-in throwaway_plugin:NoSuchScenario" in broken["reason"]
    assert "\n" not in broken["reason"]
