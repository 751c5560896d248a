"""Network namespaces of a run's own, one per node, so that a node can be cut off its peers.

Node *i* runs in namespace ``lq<token>-<i>`` with the address ``10.A.B.(i+1)`` on its veth
``host``, whose other end ``lq<token>h<i>`` is in the launcher's namespace with the address
``10.A.B.(100+i)``, point to point: the launcher (the run's proxies, ``rabbitmqctl``) reaches
node *i* over that link. Every pair of nodes has a veth pair of its own (``p<j>`` in *i*'s
namespace, ``p<i>`` in *j*'s) and a route to the other's address over it. So no traffic
between nodes leaves the namespaces the run created, and nothing forwards packets: this kernel
has no bridge device, and no sysctl is touched anywhere.

:meth:`NodeNetwork.cut` adds iptables rules inside node *i*'s namespace that DROP every packet
to or from a peer's address; :meth:`NodeNetwork.heal` removes them. The launcher's namespace
gets no rule: only the veth ends above and their routes, removed by :meth:`NodeNetwork.destroy`
and, should the launcher die first, by the reaper (``baselines/servers/reaper.py``).
"""
from __future__ import annotations

import functools
import os
import random
import secrets
import shutil
import subprocess
import time

from baselines.servers.reaper import remove_namespace

GONE_S = 10.0  # how long the kernel may take to drop a deleted namespace's links


class NetnsError(RuntimeError):
    """An ``ip``/``iptables`` command failed (one line: the command and its error)."""


def run(*argv: str) -> str:
    done = subprocess.run(argv, capture_output=True, text=True, timeout=30)
    if done.returncode != 0:
        raise NetnsError(f"{' '.join(argv)}: {' '.join((done.stderr or done.stdout).split())[:200]}")
    return done.stdout


@functools.cache
def unavailable() -> str | None:
    """``None`` when this process can make namespaces and iptables rules in them, else why not (probed once)."""
    if os.geteuid() != 0:
        return "network namespaces need root"
    for binary, package in (("ip", "iproute2"), ("iptables", "iptables")):
        if not shutil.which(binary):
            return f"{binary} is not installed (apt-get install {package})"
    probe = f"lq{secrets.token_hex(3)}-probe"
    try:
        run("ip", "netns", "add", probe)
        run("ip", "netns", "exec", probe, "iptables", "-A", "INPUT", "-s", "10.0.0.1", "-j", "DROP")
        run("ip", "-n", probe, "link", "add", "probe0", "type", "veth", "peer", "name", "probe1")
    except NetnsError as exc:
        return str(exc)
    finally:
        subprocess.run(["ip", "netns", "delete", probe], capture_output=True)
    return None


class NodeNetwork:
    """The namespaces and links of ``size`` nodes (see the module docstring); ``create`` makes them."""

    def __init__(self, size: int) -> None:
        self.size = size
        self.token = secrets.token_hex(3)
        self.subnet = f"10.{random.randrange(100, 250)}.{random.randrange(0, 256)}"
        self.created: list[int] = []

    def namespace(self, i: int) -> str:
        return f"lq{self.token}-{i}"

    def host_link(self, i: int) -> str:
        return f"lq{self.token}h{i}"

    def address(self, i: int) -> str:
        return f"{self.subnet}.{i + 1}"

    def host_address(self, i: int) -> str:
        return f"{self.subnet}.{100 + i}"

    def exec_argv(self, i: int, argv: list[str]) -> list[str]:
        """``argv`` run in node ``i``'s namespace (``ip netns exec`` execs it: the PID stays the process's)."""
        return ["ip", "netns", "exec", self.namespace(i), *argv]

    def create(self, watch=None) -> "NodeNetwork":
        """Make the namespaces and links; ``watch(namespace, host_link)`` is called for each namespace
        before anything is put in it (the reaper's ``watch_namespace``). ``NetnsError`` when a command
        fails (what was made is removed)."""
        taken = run("ip", "-4", "route", "show", "match", f"{self.subnet}.0/24")
        if any(not line.startswith("default") for line in taken.splitlines()):
            raise NetnsError(f"{self.subnet}.0/24 is routed here already")
        try:
            for i in range(1, self.size + 1):
                ns, link = self.namespace(i), self.host_link(i)
                if watch is not None:
                    watch(ns, link)
                run("ip", "netns", "add", ns)
                self.created.append(i)
                run("ip", "-n", ns, "link", "set", "lo", "up")
                run("ip", "link", "add", link, "type", "veth", "peer", "name", "host", "netns", ns)
                run("ip", "addr", "add", self.host_address(i), "peer", self.address(i), "dev", link)
                run("ip", "link", "set", link, "up")
                run("ip", "-n", ns, "addr", "add", self.address(i), "peer", self.host_address(i), "dev", "host")
                run("ip", "-n", ns, "link", "set", "host", "up")
            for i in range(1, self.size + 1):
                for j in range(i + 1, self.size + 1):
                    run("ip", "-n", self.namespace(i), "link", "add", f"p{j}", "type", "veth",
                        "peer", "name", f"p{i}", "netns", self.namespace(j))
                    for a, b in ((i, j), (j, i)):
                        run("ip", "-n", self.namespace(a), "link", "set", f"p{b}", "up")
                        run("ip", "-n", self.namespace(a), "route", "add", self.address(b), "dev", f"p{b}",
                            "src", self.address(a))
        except BaseException:
            self.destroy()
            raise
        return self

    def _rules(self, i: int, action: str) -> None:
        for j in range(1, self.size + 1):
            if j != i:
                for chain, way in (("INPUT", "-s"), ("OUTPUT", "-d")):
                    run(*self.exec_argv(i, ["iptables", action, chain, way, self.address(j), "-j", "DROP"]))

    def cut(self, i: int) -> None:
        """DROP, inside node ``i``'s namespace, every packet between it and its peers."""
        self._rules(i, "-A")

    def heal(self, i: int) -> None:
        """Remove what :meth:`cut` added (nothing else is in those tables)."""
        for chain in ("INPUT", "OUTPUT"):
            run(*self.exec_argv(i, ["iptables", "-F", chain]))

    def rules(self, i: int) -> str:
        """Node ``i``'s namespace's iptables rules (``iptables -S``)."""
        return run(*self.exec_argv(i, ["iptables", "-S"]))

    def destroy(self) -> None:
        """Kill what runs in the namespaces, delete them and the launcher's veth ends; wait until the
        links are gone. Safe to call twice."""
        for i in self.created:
            remove_namespace(self.namespace(i), self.host_link(i))
        deadline = time.monotonic() + GONE_S
        while any(os.path.exists(f"/sys/class/net/{self.host_link(i)}") for i in self.created):
            if time.monotonic() > deadline:
                raise NetnsError(f"links of {self.namespace(1)}.. still there {GONE_S:g} s after deleting them")
            time.sleep(0.05)
        self.created = []
