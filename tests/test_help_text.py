"""``--help`` reads whole and in order: every command's summary in a command list is its complete
sentence (Click would cut it at the first ". " or at the column width), and long lists (attacks,
suites, methods, report IDs) come after the options, where the help text says they are."""
from __future__ import annotations

import re

import pytest
import typer.main

from advkd.cli import app, main

ROOT = typer.main.get_command(app)
ABBREVIATIONS = ("Fig.", "Figs.", "Eq.", "Tab.", "Sec.", "e.g.", "i.e.", "cf.", "et al.", "vs.", "etc.")
PLAIN, RICH = 80, 160  # below 100 columns advkd --help is Click's plain text, above it Typer's Rich panels


def groups(command=ROOT, path=()):
    """(path, group) for the root and every command group under it (advkd presets)."""
    yield path, command
    for name, sub in sorted(getattr(command, "commands", {}).items()):
        if hasattr(sub, "commands"):
            yield from groups(sub, (*path, name))


def leaves(command=ROOT, path=()):
    """(path, command) for every command that runs something (not a group)."""
    for name, sub in sorted(getattr(command, "commands", {}).items()):
        yield from leaves(sub, (*path, name)) if hasattr(sub, "commands") else [((*path, name), sub)]


GROUPS = dict(groups())
LEAVES = dict(leaves())


def help_text(args: list[str], columns: int, monkeypatch, capsys) -> str:
    monkeypatch.setenv("COLUMNS", str(columns))
    assert main([*args, "--help"]) == 0
    return capsys.readouterr().out


def summaries(text: str, names: list[str]) -> dict[str, str]:
    """Each command's summary as printed in the "Commands" list (wrapped lines joined; Rich's box
    characters dropped)."""
    section = re.split(r"^\W*Commands\b.*$", text, maxsplit=1, flags=re.M)[1]
    rows: dict[str, list[str]] = {}
    current = None
    for raw in section.splitlines():
        line = raw.strip("│╭╮╰╯─ \t")
        head = re.match(r"^(\S+)\s{2,}(.*)$", line)
        if head and head.group(1) in names:
            current = head.group(1)
            rows[current] = [head.group(2)]
        elif current and line:
            rows[current].append(line)
    return {name: " ".join(" ".join(parts).split()) for name, parts in rows.items()}


def test_every_command_and_group_has_a_summary_of_its_own():
    for path, group in GROUPS.items():
        for name, command in group.commands.items():
            text = command.short_help or ""
            assert text, f"advkd {' '.join((*path, name))} has no short_help: Click would cut its help in the command list"
            assert text.endswith(".") and not text.endswith(("...", *ABBREVIATIONS)), (name, text)


@pytest.mark.parametrize("columns", [PLAIN, RICH])
@pytest.mark.parametrize("path", sorted(GROUPS), ids=lambda p: " ".join(("advkd", *p)))
def test_command_lists_show_every_summary_whole(path, columns, monkeypatch, capsys):
    group = GROUPS[path]
    shown = summaries(help_text(list(path), columns, monkeypatch, capsys), list(group.commands))
    assert set(shown) == set(group.commands)
    for name, command in group.commands.items():
        assert shown[name] == " ".join(command.short_help.split()), (name, shown[name])
        assert not shown[name].endswith(("...", "…", *ABBREVIATIONS)), (name, shown[name])


def _layout(text: str, lists: list[str]) -> tuple[int, list[int], list[int]]:
    """(index of the help option's line, the last option; indices of the list headings such as
    "Attacks:"; indices of lines that point below)."""
    lines = [line.strip("│ ") for line in text.splitlines()]
    help_line = max(i for i, line in enumerate(lines) if re.search(r"(^|\s)--help\b", line))
    headings = [i for i, line in enumerate(lines) if line in {f"{name}:" for name in lists}]
    below = [i for i, line in enumerate(lines) if re.search(r"\bbelow\b|\bafter the options\b", line)]
    return help_line, headings, below


@pytest.mark.parametrize("columns", [PLAIN, RICH])
@pytest.mark.parametrize("path", sorted(LEAVES), ids=lambda p: " ".join(("advkd", *p)))
def test_long_lists_come_after_the_options_and_references_point_the_right_way(path, columns, monkeypatch, capsys):
    text = help_text(list(path), columns, monkeypatch, capsys)
    lists = re.findall(r"^([A-Z][A-Za-z]*):$", LEAVES[path].epilog or "", re.M)  # Attacks, Suites, Methods, IDs
    help_line, headings, below = _layout(text, lists)
    assert len(headings) == len(lists), f"the lists {lists} are not all in the help:\n{text}"
    first_panel = next(i for i, line in enumerate(text.splitlines()) if re.match(r"\W*(Arguments|Options)\b", line))
    assert first_panel <= 12, f"a long text (a list?) before the arguments and options:\n{text}"
    assert all(h > help_line for h in headings), f"a list comes before the options:\n{text}"
    assert not re.search(r"\b(see|listed) above\b", text)
    if below:  # "see below" / "listed after the options": there is a list, and it is after every such line
        assert headings and max(below) < min(headings), f"nothing listed below a line that says so:\n{text}"


def test_attack_help_shows_its_options_before_the_attack_and_suite_lists(monkeypatch, capsys):
    lines = help_text(["attack"], PLAIN, monkeypatch, capsys).splitlines()
    first_option = next(i for i, line in enumerate(lines) if line.lstrip().startswith("--suite"))
    attacks = lines.index("  Attacks:")
    assert first_option < 20 < attacks  # the options open the page, the ~50 lines of attacks follow them
    assert lines.index("  Suites:") > attacks
    assert any(line.startswith("  pgd10: ") for line in lines[attacks:])
    assert any(line.startswith("  quick: ") for line in lines[lines.index("  Suites:"):])
    assert "Attack suite (listed below the options)." in lines[first_option]
