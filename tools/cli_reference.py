"""Write docs/cli.md, the command-line reference, from the Typer app itself (``make docs``).

Typer renders the markdown (``typer.cli.get_docs_for_click``: every command, argument and option
with its help, choices, defaults and environment variables), so the page cannot drift from the
code; ``tests/test_cli_reference.py`` checks that the committed page equals a fresh rendering.

The rendering is deterministic: it does not depend on the terminal (Typer's markdown is not
wrapped), on colour settings, or on the user's presets (``$ADVKD_PRESET_DIR`` is ignored, so the
``--preset`` help names the shipped presets only).

    python tools/cli_reference.py                # print the page
    python tools/cli_reference.py --out docs/cli.md
"""
from __future__ import annotations

import argparse
import os
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # this checkout's advkd (its presets folder is found from the repository root)
PAGE = ROOT / "docs" / "cli.md"

TITLE = "advkd command reference"
INTRO = (
    "Every command of the `advkd` command line with all its arguments and options, as `--help` prints them.\n\n"
    "This page is generated from the Typer app by `make docs` (`tools/cli_reference.py`); do not edit it by hand. "
    "How the commands fit together: [usage.md](usage.md); what the options mean in depth: "
    "[training.md](training.md), [evaluation.md](evaluation.md), [reports.md](reports.md).\n"
)


def _escape(text: str) -> str:
    """Markdown-escape help text outside inline code: ``<runs-dir>`` would read as an HTML tag and
    ``beta*T(x*)`` as emphasis."""
    parts = re.split(r"(`[^`]*`)", text)
    for i in range(0, len(parts), 2):  # even parts are outside backticks
        parts[i] = parts[i].replace("<", "&lt;").replace(">", "&gt;").replace("*", "\\*")
    return "".join(parts)


def _escape_page(page: str) -> str:
    out, fenced = [], False
    for line in page.split("\n"):
        if line.startswith("```"):
            fenced = not fenced
            out.append(line)
        elif fenced or line.startswith("#") or re.fullmatch(r"\*\*\w+\*\*:", line):  # Typer's own headings
            out.append(line)
        elif line.startswith("* `"):  # "* `--option <type>`: help" -- the option itself stays as Typer wrote it
            head, sep, rest = line.partition("`: ")
            out.append(head + sep + _escape(rest) if sep else line)
        else:
            out.append(_escape(line))
    return "\n".join(out)


def _full_short_help(group, ctx) -> None:
    """In the lists of commands, each command's first paragraph instead of Click's first 45 characters."""
    for name in group.list_commands(ctx):
        command = group.get_command(ctx, name)
        if command is None:
            continue
        if command.help and not command.short_help:
            command.short_help = command.help.strip().split("\n\n")[0]
        if hasattr(command, "list_commands"):  # a group of subcommands (advkd presets list|show)
            _full_short_help(command, ctx)


def render() -> str:
    """The reference page as markdown."""
    os.environ.pop("ADVKD_PRESET_DIR", None)  # before advkd.cli builds its help strings
    import typer
    import typer.main
    from typer.cli import get_docs_for_click

    from advkd.cli import app

    group = typer.main.get_command(app)
    ctx = typer.Context(group, info_name="advkd")
    _full_short_help(group, ctx)
    page = get_docs_for_click(obj=group, ctx=ctx, name="advkd", title=TITLE)
    head, _, body = page.partition("\n\n")
    return _escape_page(f"{head}\n\n{INTRO}\n{body}").strip() + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Render the advkd CLI reference (docs/cli.md) from the Typer app.")
    parser.add_argument("--out", type=Path, help="write the page here instead of printing it")
    args = parser.parse_args(argv)
    page = render()
    if args.out:
        args.out.write_text(page, encoding="utf-8")
    else:
        sys.stdout.write(page)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
