"""The command line around Click: what is done to ``argv`` before Click parses it (global
options given after the subcommand moved to the root, text that is not UTF-8 refused, plain help
on a narrow terminal) and the one line said when a command stops (Ctrl-C, a stop signal).

Kept apart from :mod:`advkd.cli`, which declares the commands: these functions read the Click
tree it hands them (``group``) but declare nothing.
"""
from __future__ import annotations

import os
import shlex
from typing import Any

import typer
import typer.core

from advkd.core.errors import AdvkdError
from advkd.core.preempt import Preempted


def one_line(text: str) -> str:
    """Text on one line (messages are one line on stderr)."""
    return " ".join(str(text).split())


def subcommand(args: list[str], group: typer.core.TyperGroup) -> str:
    """The subcommand of an argument list (``advkd --runs-dir R distill ...`` -> ``distill``): past
    the root's options and their values, so a runs dir named ``distill`` is not taken for it."""
    root, i = _value_options(group), 0
    while i < len(args) and args[i].startswith("-"):
        i += 2 if args[i] in root else 1
    return args[i] if i < len(args) and args[i] in getattr(group, "commands", {}) else ""


def interrupted_line(args: list[str], group: typer.core.TyperGroup) -> str:
    """What to say on Ctrl-C: training keeps its completed epochs, so name the resume command."""
    command = subcommand(args, group)
    if command in ("pretrain-teacher", "distill"):
        again = " ".join(shlex.quote(a) for a in args) + ("" if "--resume" in args else " --resume")
        return f"advkd: interrupted; completed epochs are kept: resume with advkd {again}"
    if command in ("attack", "transfer-attack"):
        return "advkd: interrupted; no record was written: rerun the same command"
    return "advkd: interrupted"


def preempted_line(args: list[str], stop: Preempted, group: typer.core.TyperGroup) -> str:
    """What to say after a stop signal: what is saved, and the command that continues it."""
    command = subcommand(args, group)
    if command in ("pretrain-teacher", "distill"):
        again = " ".join(shlex.quote(a) for a in args) + ("" if "--resume" in args else " --resume")
        return f"advkd: stopped by {stop.signal_name}; {stop.where}: resume with advkd {again}"
    return f"advkd: stopped by {stop.signal_name}; {stop.where}: rerun the same command to continue"


HELP_MIN_COLUMNS = 100  # Rich help tables cut option names below this width ("--robust-teach…")


def plain_help_when_narrow(args: list[str]) -> None:
    """Below ``HELP_MIN_COLUMNS`` (a narrow terminal, or a pipe at 80 columns) ``--help`` is
    click's plain text, which wraps instead of cutting option names and descriptions."""
    import shutil

    if ("--help" in args or "-h" in args) and shutil.get_terminal_size((80, 24)).columns < HELP_MIN_COLUMNS:
        typer.core.HAS_RICH = False  # restored by main() when the command ends


TEXT_ENV = ("ADVKD_RUNS_DIR", "ADVKD_DATA_DIR", "ADVKD_PRESET_DIR", "ADVKD_CALIBRATION_DIR")


def _value_options(command: Any) -> set[str]:
    """The names of ``command``'s options that take a value (``--seed 1``, not ``--resume``)."""
    return {o for p in command.params if p.param_type_name == "option" and not p.is_flag and not p.is_eager for o in p.opts}


def hoist_root_options(args: list[str], group: typer.core.TyperGroup) -> list[str]:
    """Move each global option given after the subcommand that the subcommand does not declare
    itself (``--threads`` everywhere; ``--device`` and ``--seed`` after ``report`` and ``results``,
    ...) to just before the subcommand, where the root parses it. So "global options work on every
    subcommand, before or after its name" holds for every one, and the value after the name wins.
    A subcommand option's value is never taken for a global option; nothing after ``--`` moves."""
    root = _value_options(group)
    i = 0  # the subcommand's position: past the root's options and their values
    while i < len(args) and args[i].startswith("-"):
        i += 2 if args[i] in root else 1
    if i >= len(args) or args[i] not in getattr(group, "commands", {}):
        return args
    chain, k = [group.commands[args[i]]], i + 1
    while k < len(args) and args[k] in getattr(chain[-1], "commands", {}):  # a group's subcommand: advkd presets show
        chain.append(chain[-1].commands[args[k]])
        k += 1
    declared = {o for c in chain for p in c.params for o in (*p.opts, *p.secondary_opts)}
    hoist, own = root - declared, set().union(*(_value_options(c) for c in chain))
    front, rest, j = args[:i], [args[i]], i + 1
    while j < len(args):
        a = args[j]
        if a == "--":
            rest += args[j:]
            break
        width = 2 if a in hoist or a in own else 1  # the option and its value, or one argument
        target = front if a.split("=", 1)[0] in hoist else rest
        target += args[j:j + width]
        j += width
    return front + rest


def check_text(args: list[str]) -> None:
    """Refuse an argument or ADVKD_* path that is not valid UTF-8 (undecodable bytes reach Python
    as lone surrogates): it would be written into config.yaml, checkpoints and records, and fail
    there after the work, or leave a run no later command can read."""
    named = [(f"argument {a!r}", a) for a in args] + [(f"${k}", os.environ[k]) for k in TEXT_ENV if k in os.environ]
    for what, text in named:
        try:
            text.encode("utf-8")
        except UnicodeEncodeError:
            shown = text.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")
            raise AdvkdError(f"{what if what.startswith('$') else 'argument'} {shown!r} is not valid UTF-8; "
                             "advkd records every name and path as UTF-8 text: rename it") from None
