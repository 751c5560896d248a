"""Registries of named plug-ins: built-ins merged with an entry-point group, and ``NAME,NAME|all``.

Backends (``logqueue.backends``) and scenarios (``logqueue.scenarios``) are registered the
way worker functions are (``logqueue.workers``): a distribution adds
``name = "module:attr"`` under the group, and the name joins the built-in ones. Nothing
is imported until it is asked for, so a broken plug-in fails alone, with one line
naming it and its distribution, while every other name keeps working. A plug-in cannot
replace a built-in name.
"""
from __future__ import annotations

import importlib
from collections.abc import Callable, Iterable, Mapping
from importlib.metadata import EntryPoint, entry_points


class PluginLoadError(ImportError):
    """A registered name whose module or attribute cannot be loaded; ``str()`` is one line naming it."""


def parse_names(spec: str, known: list[str], kind: str, everything: Iterable[str] | None = None,
                unknown: type[ValueError] = ValueError) -> list[str]:
    """``"a,b"`` or ``"all"`` -> names in the order given, each once (``all``: ``everything``, default ``known``).

    Raises ``unknown`` with a one-line message for an unknown name or an empty list.
    """
    chosen: list[str] = []
    for part in (p.strip() for p in spec.split(",")):
        if not part:
            continue
        for name in (list(known if everything is None else everything) if part == "all" else [part]):
            if name not in known:
                raise unknown(f"unknown {kind} {name!r}; known: {', '.join(known)} (or 'all')")
            if name not in chosen:
                chosen.append(name)
    if not chosen:
        raise unknown(f"no {kind} named; use NAME,NAME or 'all'")
    return chosen


class Registry:
    """``builtins`` (``{name: "module:attr"}``, read at each call) plus the entry points of ``group``.

    ``kind`` names one in messages ("backend"); ``module_label`` its module ("adapter").
    """

    def __init__(self, kind: str, builtins: Mapping[str, str], group: str,
                 unknown: type[ValueError] = ValueError, module_label: str | None = None) -> None:
        self.kind, self.builtins, self.group, self.unknown = kind, builtins, group, unknown
        self.module_label = module_label or kind

    def plugins(self) -> dict[str, EntryPoint]:
        """The group's entry points by name, built-in names left out."""
        return {ep.name: ep for ep in entry_points(group=self.group) if ep.name not in self.builtins}

    def names(self) -> list[str]:
        """Built-in names in their order, then the plug-ins'."""
        return list(self.builtins) + sorted(self.plugins())

    def parse(self, spec: str, exclude_from_all: Iterable[str] = ()) -> list[str]:
        known = self.names()
        return parse_names(spec, known, self.kind, [n for n in known if n not in set(exclude_from_all)], self.unknown)

    def load(self, name: str, on_error: Callable[[str, str], Exception] | None = None):
        """The object registered as ``name``.

        Raises:
            ``unknown``: the name is not registered.
            PluginLoadError (or what ``on_error(name, reason)`` returns): it cannot be loaded.
        """
        fail = on_error or (lambda _name, reason: PluginLoadError(reason))
        if name in self.builtins:
            module_name, _, attr = self.builtins[name].partition(":")
            try:
                module = importlib.import_module(module_name)
            except ImportError as exc:
                raise fail(name, f"{name}: {self.module_label} module {module_name} cannot be imported ({exc})") from None
            return getattr(module, attr)
        ep = self.plugins().get(name)
        if ep is None:
            raise self.unknown(f"unknown {self.kind} {name!r}; known: {', '.join(self.names())} (or 'all')")
        try:
            return ep.load()
        except Exception as exc:  # whatever a broken plug-in raises on import: one line, this name only
            dist = ep.dist.name if ep.dist is not None else "an unknown distribution"
            reason = " ".join(str(exc).split()) or type(exc).__name__
            raise fail(name, f"{name}: plug-in {ep.value} (from {dist}) cannot be loaded: "
                             f"{type(exc).__name__}: {reason}") from None
