"""Every global option works after every subcommand, as the README says ("before or after its
name"), and the value after the name wins over one before it. The command stops where it would
start its work (its first call of ``advkd.cli._globals``): only the parsing is under test."""
from __future__ import annotations

import pytest
import typer.main

from advkd import cli

ROOT = typer.main.get_command(cli.app)
# Each command's required arguments (none of them is opened: the command stops before).
REQUIRED = {
    "pretrain-teacher": ["--arch", "tinycnn"],
    "distill": ["--method", "rslad"],
    "attack": [],
    "transfer-attack": ["--surrogate", "a.safetensors", "--target", "b.safetensors"],
    "landscape": ["a.safetensors"],
    "report": ["list"],
    "results": [],
    "presets list": [],
    "presets show": ["mini"],
    "methods": [],
    "attacks": [],
    "speed": [],
}
# option -> (Globals field, value before the subcommand, value after it: the one that counts)
GLOBALS = {
    "--data-dir": ("data_dir", "/before/data", "/after/data"),
    "--runs-dir": ("runs_dir", "/before/runs", "/after/runs"),
    "--device": ("device", "cuda:1", "cpu"),
    "--seed": ("seed", "1", "7"),
    "--threads": ("threads", "2", "1"),
}


def leaves(command=ROOT, path=()):
    for name, sub in getattr(command, "commands", {}).items():
        yield from leaves(sub, (*path, name)) if hasattr(sub, "commands") else [" ".join((*path, name))]


class Started(Exception):
    """Raised where the command would begin its work."""


def test_the_table_names_every_command_and_every_global_option():
    assert set(REQUIRED) == set(leaves())
    values = {o for p in ROOT.params if p.param_type_name == "option" and not p.is_flag and not p.is_eager for o in p.opts}
    assert set(GLOBALS) == values


@pytest.mark.parametrize("option", sorted(GLOBALS))
@pytest.mark.parametrize("command", sorted(REQUIRED))
def test_a_global_option_after_the_subcommand_wins(command, option, monkeypatch):
    made: list[cli.Globals] = []
    threads: list[int | None] = []

    class Recorded(cli.Globals):
        def __init__(self, *args, **kwargs) -> None:
            super().__init__(*args, **kwargs)
            made.append(self)

    real = cli._globals

    def stop(ctx, **given):
        real(ctx, **given)
        raise Started

    monkeypatch.setattr(cli, "Globals", Recorded)
    monkeypatch.setattr(cli, "_globals", stop)
    monkeypatch.setattr("advkd.core.accel.set_threads", threads.append)
    field, before, after = GLOBALS[option]
    args = [option, before, *command.split(), *REQUIRED[command], option, after]
    try:
        assert cli.main(args) == 0  # the presets commands use no global option: they just run
    except Started:
        pass
    if field == "threads":
        assert threads == [int(after)]
    else:
        assert made and str(getattr(made[-1], field)) == after  # the Globals the command works with
