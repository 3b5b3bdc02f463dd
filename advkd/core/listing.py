"""``advkd methods`` and ``advkd attacks``: every name a registry answers to, where it comes from
(built in, or a plugin's package, version and ``module:Class``), and the plugins it refused."""
from __future__ import annotations

from typing import Any

from rich.table import Table

from advkd.core.registry import Registry

__all__ = ["registry_rows", "registry_table"]


def registry_rows(registry: Registry[Any], describe: Any = None) -> list[dict[str, Any]]:
    """One row per name (plugins loaded), then one per refused plugin (``refused``: why)."""
    rows = []
    for name in registry.listing():
        entry = registry.entry(name)
        origin = entry.meta.get("origin")
        rows.append({"name": name, "from": origin.text() if origin else "built in",
                     "origin": origin.record() if origin else None, "about": describe(entry) if describe else "", "help": entry.help})
    for name, why in sorted(registry.refused().items()):
        rows.append({"name": name, "from": "refused", "origin": None, "about": "", "help": "", "refused": why})
    return rows


def registry_table(rows: list[dict[str, Any]], *, kind: str, about: str) -> Table:
    plugins = sum(1 for r in rows if r["origin"])
    refused = sum(1 for r in rows if r.get("refused"))
    title = f"{sum(1 for r in rows if not r.get('refused'))} {kind}s ({plugins} from plugins" + (f", {refused} refused" if refused else "") + ")"
    table = Table(title=title, title_justify="left", caption="Plugins: docs/plugins.md", caption_justify="left")
    for col in ("name", about, "from", "what it is"):
        table.add_column(col, overflow="fold")
    for r in rows:
        table.add_row(r["name"], r["about"], r["from"], r.get("refused") or r["help"])
    return table
