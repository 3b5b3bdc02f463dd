"""Piped and narrow output cuts nothing: tables at their natural width, help as plain wrapped text."""
from __future__ import annotations

import os
import subprocess
import sys


def _advkd(*args: str, columns: int = 80) -> str:
    env = {**os.environ, "COLUMNS": str(columns)}
    out = subprocess.run([sys.executable, "-m", "advkd", *args], capture_output=True, text=True, env=env, timeout=120)
    assert out.returncode == 0, out.stderr
    return out.stdout


def test_a_piped_table_keeps_every_cell_whole(tmp_path):
    text = _advkd("report", "table2", "--runs-dir", str(tmp_path))
    assert "…" not in text and "82.95" in text and "Teacher WRN-34-20" in text and "AdaIAD" in text


def test_help_at_80_columns_keeps_option_names_and_descriptions_whole():
    text = _advkd("distill", "--help")
    assert "…" not in text and "--robust-teacher" in text and "--clean-teacher" in text
    assert max(len(line) for line in text.splitlines()) <= 80
    wide = _advkd("distill", "--help", columns=160)
    assert "--robust-teacher" in wide and "╭" in wide  # wide enough: the Rich panels
