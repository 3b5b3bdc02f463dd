"""The manual's relative links and anchors resolve (tools/check_links.py): a moved page or
records folder must not leave a dead link in the README or docs/."""
from __future__ import annotations

import importlib.util
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
_spec = importlib.util.spec_from_file_location("check_links", ROOT / "tools" / "check_links.py")
check_links = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(check_links)


def test_every_relative_link_and_anchor_of_the_manual_resolves():
    assert check_links.broken_links(ROOT) == []


def test_the_checker_finds_a_missing_file_and_a_missing_heading(tmp_path):
    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "a.md").write_text("# A page\n\n## The `make demo` step\n\n```\n[not a link](nowhere.md)\n```\n")
    (tmp_path / "README.md").write_text(
        "[ok](docs/a.md#the-make-demo-step) [gone](docs/b.md) [bad anchor](docs/a.md#nope) [web](https://x.org/y.md) ![img](docs/p.png)\n")
    assert check_links.broken_links(tmp_path) == [
        "README.md: docs/b.md (no such file)", "README.md: docs/a.md#nope (no such heading)", "README.md: docs/p.png (no such file)"]
