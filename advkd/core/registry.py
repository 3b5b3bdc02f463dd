"""A small decorator registry shared by models, datasets, attacks, suites and methods.

Registries are data: adding an entry is one decorated definition. Lookups accept aliases and
are case-insensitive; an unknown name raises :class:`AdvkdError` listing the valid names.
"""
from __future__ import annotations

import fnmatch
import re
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Generic, TypeVar

from advkd.core.errors import AdvkdError

if TYPE_CHECKING:
    from advkd.core.plugins import PluginSource

T = TypeVar("T")


@dataclass
class Entry(Generic[T]):
    name: str
    obj: T
    help: str = ""
    aliases: tuple[str, ...] = ()
    meta: dict = field(default_factory=dict)


_SPEC_REF = re.compile(r"\s*\((?:[^()]*;\s*)?spec [^()]*\)")


def summary(doc: str | None) -> str:
    """A docstring's first paragraph as one line of plain text (for ``--help``): wrapped lines
    joined, reST ``literals`` shown without their backquotes."""
    first = (doc or "").strip().split("\n\n", 1)[0]
    text = " ".join(line.strip() for line in first.splitlines()).replace("``", "")
    return _SPEC_REF.sub("", text)  # "(spec 2.2a)": the project's internal spec, which users do not have


class Registry(Generic[T]):
    """Name -> object, with aliases, one-line help and free-form metadata per entry.

    ``plugins`` (:class:`advkd.core.plugins.PluginSource`): outside code may add entries through an
    entry-point group or a ``module:attr`` spec; they are imported only when a name is not built in
    or a list is asked for (:meth:`listing`), and carry ``meta["origin"]``.
    """

    def __init__(self, kind: str, plugins: PluginSource | None = None) -> None:
        self.kind = kind
        self.plugins = plugins
        self._entries: dict[str, Entry[T]] = {}
        self._aliases: dict[str, str] = {}

    @staticmethod
    def key(name: str) -> str:
        """The lookup key of ``name``: case and ``_`` / ``-`` do not matter."""
        return name.strip().lower().replace("_", "-")

    def add(self, name: str, obj: T, *, help: str = "", aliases: tuple[str, ...] = (), **meta) -> T:
        key = self.key(name)
        if key in self._entries or key in self._aliases:
            warnings.warn(f"{self.kind} {name!r} registered twice; the later definition wins", stacklevel=3)
        self._entries[key] = Entry(name=key, obj=obj, help=help, aliases=tuple(aliases), meta=dict(meta))
        for alias in aliases:
            self._aliases[self.key(alias)] = key
        return obj

    def add_plugin(self, key: str, meta: dict[str, Any], obj: T, origin: Any) -> str:
        """Add an outside entry (:mod:`advkd.core.plugins`) under ``key``, refused where a built-in
        has that key; its help is its docstring's first paragraph, its ``meta`` carries ``origin``."""
        if key in self.builtin_names():
            raise AdvkdError(f"{self.kind} {key!r} from {origin.text()} clashes with the built-in {self.kind} {key!r}; refused (give it another name)")
        self.add(key, obj, help=summary(getattr(obj, "__doc__", None)), origin=origin, **meta)
        return key

    def register(self, name: str, *, help: str = "", aliases: tuple[str, ...] = (), **meta) -> Callable[[T], T]:
        """Decorator form of :meth:`add`."""

        def deco(obj: T) -> T:
            return self.add(name, obj, help=help or summary(getattr(obj, "__doc__", None)), aliases=aliases, **meta)

        return deco

    def _lookup(self, name: str) -> str | None:
        key = self.key(name)
        key = self._aliases.get(key, key)
        return key if key in self._entries else None

    def canonical(self, name: str) -> str:
        """The registered name behind ``name`` (which may be an alias, a plugin's name or a
        ``module:attr`` spec); AdvkdError if unknown, or the one line that says why a plugin of
        that name was refused."""
        found = self._lookup(name)
        if found is not None:
            return found
        if self.plugins is not None:
            from advkd.core.plugins import is_spec

            if is_spec(name):
                return self.plugins.load_spec(name, self)
            self.plugins.load_all(self)
            found = self._lookup(name)
            if found is not None:
                return found
            why = self.plugins.errors.get(self.key(name))
            if why:
                raise AdvkdError(why)
        raise AdvkdError(f"unknown {self.kind} {name!r}; valid: {', '.join(self.names())}")

    def __contains__(self, name: str) -> bool:
        """Whether ``name`` is registered now (plugins not yet loaded are not looked for)."""
        return self._lookup(name) is not None

    def builtin_names(self) -> list[str]:
        """Names registered by advkd itself (no plugin origin)."""
        return [n for n, e in self._entries.items() if "origin" not in e.meta]

    def listing(self) -> list[str]:
        """Every name, plugins loaded first (a printed list shows what a user can ask for)."""
        if self.plugins is not None:
            self.plugins.load_all(self)
        return self.names()

    def origin(self, name: str) -> Any:
        """The :class:`advkd.core.plugins.Origin` of a plugin entry, None for a built-in."""
        return self.entry(name).meta.get("origin")

    def refused(self) -> dict[str, str]:
        """Plugins of this registry that were refused, name -> why (after :meth:`listing`)."""
        return dict(self.plugins.errors) if self.plugins is not None else {}

    def entry(self, name: str) -> Entry[T]:
        return self._entries[self.canonical(name)]

    def get(self, name: str) -> T:
        return self.entry(name).obj

    def names(self, pattern: str | None = None) -> list[str]:
        names = list(self._entries)
        return [n for n in names if pattern is None or fnmatch.fnmatch(n, pattern)]

    def __iter__(self) -> Iterator[Entry[T]]:
        return iter(self._entries.values())

    def __len__(self) -> int:
        return len(self._entries)
