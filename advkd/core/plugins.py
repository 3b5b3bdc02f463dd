"""Outside code in advkd's registries: entry points and ``module:Class`` specs.

An installed package that declares, in its ``pyproject.toml``,
``[project.entry-points."advkd.methods"] mykd = "mypkg.kd:MyKD"`` makes ``--method mykd`` work; a
quick experiment names its class directly, ``--method mypkg.kd:MyKD``. Methods, attacks,
architectures and datasets each have a group (:data:`GROUPS`).

Plugins are imported lazily: only when a name is not built in, when a spec names one, or when a
list of names is printed. A built-in run never imports them, so a broken plugin cannot break it,
and ``advkd --help`` pays nothing. Whatever goes wrong with a plugin (its import fails, its name
clashes with a built-in or with another plugin, its class does not fit) is kept as one line per
name and raised only when that name is asked for; listings show it beside the name.

Each plugin entry keeps its :class:`Origin` (distribution, version, ``module:attr``), which
configs, checkpoints and records carry so a result names the code that made it.
"""
from __future__ import annotations

import dataclasses
import importlib
import inspect
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from advkd.core.errors import AdvkdError

__all__ = ["GROUPS", "Origin", "PluginSource", "check_class", "origin_of_module", "is_spec"]

#: registry kind -> entry-point group
GROUPS = {"method": "advkd.methods", "attack": "advkd.attacks", "architecture": "advkd.models", "dataset": "advkd.datasets"}

_SPEC = re.compile(r"^[A-Za-z_][\w.]*:[A-Za-z_][\w.]*$")


def is_spec(text: str) -> bool:
    """``module:attr`` (``mypkg.kd:MyKD``), the form that names a plugin without installing it."""
    return bool(_SPEC.match(text.strip()))


@dataclass(frozen=True)
class Origin:
    """Where a plugin entry comes from."""

    spec: str  # module:attr
    distribution: str = ""  # the installed distribution that holds the module ('' for a loose module)
    version: str = ""
    entry_point: str = ""  # "advkd.methods: mykd" when it came from an entry point

    def record(self) -> dict[str, str]:
        """What configs, checkpoint metadata and result records store."""
        return {"spec": self.spec, "distribution": self.distribution, "version": self.version}

    def text(self) -> str:
        """``mypkg 0.1 (mypkg.kd:MyKD)``, or the spec alone for a loose module."""
        owner = f"{self.distribution} {self.version}".strip()
        return f"{owner} ({self.spec})" if owner else self.spec


def _last_line(exc: BaseException) -> str:
    text = f"{type(exc).__name__}: {exc}".strip()
    return text.splitlines()[-1] if text else type(exc).__name__


def origin_of_module(module: str, spec: str) -> Origin:
    """The distribution that ships ``module`` (by its top-level package), with its version."""
    from importlib import metadata  # here, not at import: a built-in run never pays for it

    top = module.split(".", 1)[0]
    try:
        owners = metadata.packages_distributions().get(top) or []
    except Exception:  # a broken distribution's metadata must not break a lookup
        owners = []
    for dist in owners:
        try:
            return Origin(spec, dist, metadata.version(dist))
        except metadata.PackageNotFoundError:
            continue
    return Origin(spec)


def _import_attr(spec: str, kind: str) -> Any:
    module, _, attr = spec.partition(":")
    try:
        obj: Any = importlib.import_module(module)
    except ModuleNotFoundError as e:
        if e.name and (module == e.name or module.startswith(e.name + ".")):
            raise AdvkdError(f"{kind} {spec!r}: no module named {e.name!r} (is its package installed, or its folder on PYTHONPATH?)") from None
        raise AdvkdError(f"{kind} {spec!r}: importing {module} failed: {_last_line(e)}") from None
    except Exception as e:  # the plugin's own code: any error is one line, never a traceback
        raise AdvkdError(f"{kind} {spec!r}: importing {module} failed: {_last_line(e)}") from None
    for part in attr.split("."):
        if not hasattr(obj, part):
            raise AdvkdError(f"{kind} {spec!r}: module {module} has no {attr!r}")
        obj = getattr(obj, part)
    return obj


#: ``adopt(registry, name, obj, origin) -> (key, meta)``: check that ``obj`` fits the registry
#: (AdvkdError with one line if not) and say the key it goes under and its entry's metadata;
#: ``name`` is None for a spec, where the object names itself (a method's ``name``). The registry
#: itself refuses a built-in's key and adds the entry (:meth:`advkd.core.registry.Registry.add_plugin`).
Adopt = Callable[[Any, "str | None", Any, Origin], "tuple[str, dict[str, Any]]"]


def check_class(obj: Any, base: type, kind: str, origin: Origin, params_hint: str) -> None:
    """The contract a plugin class shares with its built-in kin: a ``base`` subclass with a
    ``Params`` dataclass and nothing left abstract."""
    if not (isinstance(obj, type) and issubclass(obj, base)):
        raise AdvkdError(f"{origin.spec} is not a{'n' if kind[0] in 'aeiou' else ''} {kind}: it must subclass advkd.plugins.{base.__name__}")
    params = getattr(obj, "Params", None)
    if not (isinstance(params, type) and dataclasses.is_dataclass(params)):
        raise AdvkdError(f"{kind} class {origin.spec} has no Params dataclass ({params_hint})")
    if inspect.isabstract(obj):
        raise AdvkdError(f"{kind} class {origin.spec} does not implement {', '.join(sorted(obj.__abstractmethods__))}")


class PluginSource:
    """The entry-point group of one registry, loaded at most once per process."""

    def __init__(self, group: str, adopt: Adopt) -> None:
        self.group = group
        self.adopt = adopt
        self.loaded = False
        self.errors: dict[str, str] = {}  # registry key -> why that plugin is refused
        self.specs: dict[str, str] = {}  # spec -> the name it was registered under

    def entry_points(self) -> list[Any]:
        from importlib import metadata

        try:
            return list(metadata.entry_points(group=self.group))
        except Exception as e:  # corrupt metadata of some unrelated distribution
            self.errors["*"] = f"reading the {self.group} entry points failed: {_last_line(e)}"
            return []

    def load_all(self, registry: Any) -> None:
        """Import every entry point of the group once; refusals are kept in :attr:`errors`."""
        if self.loaded:
            return
        self.loaded = True
        kind = registry.kind
        by_key: dict[str, list[Any]] = {}
        for ep in self.entry_points():
            by_key.setdefault(registry.key(ep.name), []).append(ep)
        for key, eps in sorted(by_key.items()):
            origins = [self._origin(ep) for ep in eps]
            if len({o.text() for o in origins}) > 1:
                self.errors[key] = f"plugin {kind} {key!r} is declared twice: by {origins[0].text()} and by {origins[1].text()}; refused (uninstall one, or rename its entry point)"
                continue
            ep, origin = eps[0], origins[0]
            if key in registry and registry.origin(key) == origin:
                continue  # registered already (a spec of the same class, or an earlier load)
            if key in registry.builtin_names():
                self.errors[key] = (f"plugin {kind} {key!r} from {origin.text()} clashes with the built-in {kind} {key!r}; "
                                    f"refused (rename it in the plugin's [project.entry-points.\"{self.group}\"])")
                continue
            try:
                obj = ep.load()
            except Exception as e:
                where = f"entry point {self.group}: {ep.name} = {ep.value}" + (f", distribution {origin.distribution} {origin.version}".rstrip() if origin.distribution else "")
                self.errors[key] = f"plugin {kind} {key!r} failed to import ({where}): {_last_line(e)}"
                continue
            try:
                registry.add_plugin(*self.adopt(registry, key, obj, origin), obj, origin)
            except AdvkdError as e:
                self.errors[key] = f"plugin {kind} {key!r} from {origin.text()}: {e}"

    def load_spec(self, spec: str, registry: Any) -> str:
        """Import ``module:attr`` and register it; returns the name it is known by."""
        spec = spec.strip()
        if spec in self.specs:
            return self.specs[spec]
        module = spec.partition(":")[0]
        obj = _import_attr(spec, registry.kind)
        origin = origin_of_module(module, spec)
        name = registry.add_plugin(*self.adopt(registry, None, obj, origin), obj, origin)
        self.specs[spec] = name
        return name

    def _origin(self, ep: Any) -> Origin:
        dist = getattr(ep, "dist", None)
        name = getattr(dist, "name", "") or ""
        version = getattr(dist, "version", "") or ""
        if not name:
            return origin_of_module(ep.value.partition(":")[0], ep.value)
        return Origin(ep.value, name, version, f"{self.group}: {ep.name}")

