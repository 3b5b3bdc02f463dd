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


def test_piped_attack_output_keeps_a_long_checkpoint_path_on_one_line(tmp_path):
    """The table's caption and the log lines name the checkpoint: piped (no terminal, 80 columns)
    neither breaks the path inside a name."""
    from advkd.models import build_model
    from advkd.models.checkpoint import save_checkpoint

    folder = tmp_path / "a-folder-with-a-rather-long-name-for-a-sweep" / "and-a-second-level-named-after-the-teacher-run"
    ckpt = folder / "resnet18-adaad-wrn34-10-bmtard-small-s0-with-an-even-longer-tail" / "best.safetensors"
    save_checkpoint(ckpt, build_model("tinycnn", num_classes=10), {"arch": "tinycnn", "num_classes": "10", "dataset": "synthetic", "method": "natural"})
    env = {**os.environ, "COLUMNS": "80", "ADVKD_DATA_DIR": str(tmp_path / "data"), "ADVKD_RUNS_DIR": str(tmp_path / "runs")}
    out = subprocess.run([sys.executable, "-m", "advkd", "attack", str(ckpt), "--attacks", "clean,fgsm", "--n", "8", "--batch-size", "8",
                          "--threads", "1"], capture_output=True, text=True, env=env, timeout=300)
    assert out.returncode == 0, out.stderr
    assert len(str(ckpt)) > 200 and str(ckpt) in out.stdout.splitlines()  # the caption: the path, whole, on its own line
    assert any(str(ckpt) in line for line in out.stderr.splitlines())  # the log line that starts the attack


def test_piped_table_title_and_caption_wrap_at_spaces_only():
    import io

    from rich.console import Console
    from rich.table import Table

    from advkd.core.console import print_wide

    path = "/runs/" + "x" * 150 + "/best.safetensors"
    table = Table(title=f"landscape -> {path}", caption="a footer of many short words " * 6 + path)
    table.add_column("attack")
    table.add_row("pgd10")
    buf = io.StringIO()
    print_wide(table, Console(file=buf, width=80))
    lines = buf.getvalue().splitlines()
    assert lines[0] == "landscape ->" and lines[1] == path and lines[-1] == path  # whole words, the path whole
    assert table.title and table.caption  # the caller's table is left as it was
    assert all(len(line) <= 80 or line == path for line in lines)
