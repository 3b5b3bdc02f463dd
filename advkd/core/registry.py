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
from typing import Generic, TypeVar

from advkd.core.errors import AdvkdError

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
    """Name -> object, with aliases, one-line help and free-form metadata per entry."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._entries: dict[str, Entry[T]] = {}
        self._aliases: dict[str, str] = {}

    @staticmethod
    def _key(name: str) -> str:
        return name.strip().lower().replace("_", "-")

    def add(self, name: str, obj: T, *, help: str = "", aliases: tuple[str, ...] = (), **meta) -> T:
        key = self._key(name)
        if key in self._entries or key in self._aliases:
            warnings.warn(f"{self.kind} {name!r} registered twice; the later definition wins", stacklevel=3)
        self._entries[key] = Entry(name=key, obj=obj, help=help, aliases=tuple(aliases), meta=dict(meta))
        for alias in aliases:
            self._aliases[self._key(alias)] = key
        return obj

    def register(self, name: str, *, help: str = "", aliases: tuple[str, ...] = (), **meta) -> Callable[[T], T]:
        """Decorator form of :meth:`add`."""

        def deco(obj: T) -> T:
            return self.add(name, obj, help=help or summary(getattr(obj, "__doc__", None)), aliases=aliases, **meta)

        return deco

    def canonical(self, name: str) -> str:
        """The registered name behind ``name`` (which may be an alias); AdvkdError if unknown."""
        key = self._key(name)
        key = self._aliases.get(key, key)
        if key not in self._entries:
            raise AdvkdError(f"unknown {self.kind} {name!r}; valid: {', '.join(self.names())}")
        return key

    def __contains__(self, name: str) -> bool:
        key = self._key(name)
        return key in self._entries or key in self._aliases

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
