"""docs/cli.md, the command reference, is generated from the Typer app (``make docs``, which runs
``tools/cli_reference.py``): it names every command and every option, and the committed page is
what a fresh generation writes, so it cannot drift from the code."""
from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import typer.main

from advkd.cli import app

ROOT = Path(__file__).resolve().parent.parent
PAGE = ROOT / "docs" / "cli.md"
STALE = "docs/cli.md is out of date with the CLI: run `make docs` and commit docs/cli.md"


def commands(command, path=("advkd",)):
    """(path, click command) for the root and every command and subcommand below it."""
    yield path, command
    for name, sub in sorted(getattr(command, "commands", {}).items()):
        if not sub.hidden:
            yield from commands(sub, (*path, name))


def section(page: str, path: tuple[str, ...]) -> str:
    """The text under the heading of ``advkd CMD ...`` up to the next heading (the root's: under the title)."""
    heading = re.search(r"^# .*$" if len(path) == 1 else rf"^#+ `{re.escape(' '.join(path))}`$", page, re.M)
    assert heading, f"no section for `{' '.join(path)}`; {STALE}"
    following = re.search(r"^#", page[heading.end():], re.M)
    return page[heading.end(): heading.end() + following.start() if following else len(page)]


def documented_options(text: str) -> set[str]:
    """The option names of the ``* `--name, --alias <type>`: help`` lines of a section."""
    names = set()
    for head in re.findall(r"^\* `([^`]*)`", text, re.M):
        names.update(re.findall(r"(?<![\w-])(--?[\w][\w-]*)", head))
    return names


def test_every_command_and_option_is_in_the_reference():
    page = PAGE.read_text(encoding="utf-8")
    root = typer.main.get_command(app)
    seen = 0
    for path, command in commands(root):
        documented = documented_options(section(page, path))
        for param in command.params:
            if param.param_type_name != "option" or getattr(param, "hidden", False):
                continue
            for name in (*param.opts, *param.secondary_opts):
                if name.startswith("--"):
                    assert name in documented, f"`{' '.join(path)} {name}` is missing; {STALE}"
                    seen += 1
    assert len(list(commands(root))) >= 8 and seen > 100  # the walk did reach the subcommands and their options


def test_reference_is_current():
    env = {k: v for k, v in os.environ.items() if k != "ADVKD_PRESET_DIR"}
    fresh = subprocess.run([sys.executable, str(ROOT / "tools" / "cli_reference.py")], cwd=ROOT, env=env,
                           capture_output=True, text=True, timeout=300)
    assert fresh.returncode == 0, fresh.stderr
    assert fresh.stdout == PAGE.read_text(encoding="utf-8"), STALE


def test_reference_does_not_depend_on_the_machine_or_the_user():
    """No path of this checkout or home directory, and no user presets, in the page."""
    page = PAGE.read_text(encoding="utf-8")
    for leak in {str(ROOT), str(Path.home()), os.environ.get("USER", "") or "\0"}:
        assert leak not in page
    assert "[env var:" in page and "`advkd distill`" in page
