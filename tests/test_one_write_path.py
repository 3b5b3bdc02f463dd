"""One write path (advkd.core.files): every writer in the package goes through it, and it follows
no symlink below the runs dir -- at a run dir, a folder of it, the record store and its side files,
the lock file, an attack-state folder, a figure's default output -- whether the link dangles,
points outside or points inside."""
from __future__ import annotations

import os
import re
from pathlib import Path

import pytest

from advkd.cli import main
from advkd.core import files
from advkd.core.errors import AdvkdError
from advkd.core.locks import RunLock
from advkd.evaluation.records import append_records, repair_store

PACKAGE = Path(__file__).resolve().parents[1] / "advkd"
DOOR = PACKAGE / "core" / "files.py"
# a call that creates, replaces, appends to, renames or removes a file or folder. Path.replace is
# not told apart from str.replace and dataclasses.replace by a pattern, so only os.replace is caught.
WRITER = re.compile(
    r"""\bopen\([^,()]*,\s*(mode\s*=\s*)?["'][rbt]*[wax+]"""  # open(path, "w"/"a"/"x"/"+...")
    r"""|\bos\.open\(|\bos\.(replace|rename|renames|unlink|remove|rmdir|mkdir|makedirs|link|symlink|truncate)\("""
    r"""|\.(write_text|write_bytes|mkdir|unlink|rmdir|rename|symlink_to|hardlink_to|touch)\("""
    r"""|\bshutil\.(rmtree|copy|copy2|copyfile|copytree|move)\(|\bsave_file\(|\btorch\.save\(|\.savefig\("""
)
ALLOWED = {  # writes into a file object the one door opened
    ("advkd/report/figures/draw.py", "atomic_write_with(out, lambda f: fig.savefig(f,"),
}


def _writers() -> list[str]:
    found = []
    for py in sorted(PACKAGE.rglob("*.py")):
        if py == DOOR:
            continue
        rel = str(py.relative_to(PACKAGE.parent))
        for n, line in enumerate(py.read_text().splitlines(), 1):
            code = line.split("#", 1)[0]
            if WRITER.search(code) and not any(rel == f and s in code for f, s in ALLOWED):
                found.append(f"{rel}:{n}: {line.strip()}")
    return found


def test_every_writer_in_the_package_goes_through_the_one_door():
    assert _writers() == [], "write through advkd.core.files instead:\n" + "\n".join(_writers())


def test_the_writer_pattern_catches_what_it_should():
    for line in ('open(p, "ab")', 'open(p, "r+b")', "os.replace(a, b)", "os.open(p, flags)", "p.mkdir(parents=True)", "shutil.rmtree(d)", "save_file(t, str(p))",
                 "fig.savefig(out)", "p.write_text(s)", "p.unlink(missing_ok=True)", 'open(p, mode="w")'):
        assert WRITER.search(line), line
    for line in ('open(p, "rb")', "open(p)", 'open("/proc/stat", encoding="ascii")', 'text.replace("a", "b")', "Image.open(path)"):
        assert not WRITER.search(line), line


@pytest.fixture
def runs(tmp_path) -> Path:
    root = tmp_path / "runs"
    root.mkdir()
    files.register_root(root)
    return root


def _links(tmp_path: Path, at: Path, *, is_dir: bool) -> list[tuple[str, Path]]:
    """The link variants planted at ``at``: dangling, to a file/folder outside, to one inside."""
    outside = tmp_path / "outside"
    outside.mkdir(exist_ok=True)
    target = outside / "t"
    if is_dir:
        target.mkdir(exist_ok=True)
    else:
        target.write_text("untouched\n")
    inside = at.parent / f"real-{at.name}"
    if is_dir:
        inside.mkdir(parents=True, exist_ok=True)
    else:
        inside.parent.mkdir(parents=True, exist_ok=True)
        inside.write_text("untouched\n")
    return [("dangling", outside / "nowhere"), ("outside", target), ("inside", inside)]


def _snapshot(tmp_path: Path) -> dict[str, bytes | None]:
    return {str(p): (p.read_bytes() if p.is_file() and not p.is_symlink() else None) for p in sorted(tmp_path.rglob("*"))}


@pytest.mark.parametrize("kind", ["dangling", "outside", "inside"])
@pytest.mark.parametrize("level", [1, 2, 3])
def test_a_link_at_any_folder_below_the_runs_dir_is_refused_for_every_write(runs, tmp_path, kind, level):
    parts = ["distill", "cifar10", "run"]
    link = runs.joinpath(*parts[:level])
    link.parent.mkdir(parents=True, exist_ok=True)
    os.symlink(dict(_links(tmp_path, link, is_dir=True))[kind], link)
    target = runs.joinpath(*parts, "best.safetensors")
    before = _snapshot(tmp_path)
    for write in (lambda: files.atomic_write_text(target, "x"), lambda: files.open_file(target, "ab"),
                  lambda: files.open_file(target, "xb"), lambda: files.make_dirs(target.parent),
                  lambda: files.remove(target), lambda: files.remove_tree(target.parent)):
        with pytest.raises(AdvkdError) as e:
            write()
        assert "is a symlink" in str(e.value) and str(link) in str(e.value) and "\n" not in str(e.value)
    assert _snapshot(tmp_path) == before  # nothing created, written or removed anywhere


@pytest.mark.parametrize("kind", ["dangling", "outside", "inside"])
@pytest.mark.parametrize("suffix", ["", ".torn", ".bad", ".before-repair"])
def test_a_link_at_the_record_store_or_a_side_file_is_never_written_through(runs, tmp_path, kind, suffix):
    store = runs / "results.jsonl"
    if suffix:  # a real store that needs its side file: a torn tail (.torn) or a bad line (.bad, .before-repair)
        store.write_text('{"not": "a record"}\n' if suffix != ".torn" else '{"torn')
    link = store.with_name(store.name + suffix)
    os.symlink(dict(_links(tmp_path, link, is_dir=False))[kind], link)
    before = _snapshot(tmp_path)
    with pytest.raises(AdvkdError, match="symlink"):
        if suffix == ".torn" or suffix == "":
            append_records(store, [])
        else:
            repair_store(store)
    after = _snapshot(tmp_path)
    assert {k: v for k, v in after.items() if "outside" in k or "real-" in k} == {k: v for k, v in before.items() if "outside" in k or "real-" in k}


@pytest.mark.parametrize("kind", ["dangling", "outside", "inside"])
def test_a_link_at_the_lock_file_is_refused_and_left_alone(runs, tmp_path, kind):
    run = runs / "distill" / "cifar10" / "r"
    run.mkdir(parents=True)
    link = run / ".lock"
    os.symlink(dict(_links(tmp_path, link, is_dir=False))[kind], link)
    before = _snapshot(tmp_path)
    with pytest.raises(AdvkdError, match="symlink"):
        RunLock.acquire(run)
    assert _snapshot(tmp_path) == before and link.is_symlink()


def test_a_runs_dir_that_is_itself_a_link_is_used(tmp_path):
    real = tmp_path / "disk"
    real.mkdir()
    (tmp_path / "runs").symlink_to(real)
    files.register_root(tmp_path / "runs")
    files.atomic_write_text(tmp_path / "runs" / "distill" / "cifar10" / "r" / "config.yaml", "a: 1\n")
    assert (real / "distill" / "cifar10" / "r" / "config.yaml").read_text() == "a: 1\n"


def test_a_link_in_an_attack_state_folder_is_refused_by_the_attack_command(tmp_path):
    from test_bad_files import PT, RUN

    runs = tmp_path / "runs"
    assert main([*PT, "--runs-dir", str(runs), "--name", "good"]) == 0
    (tmp_path / "elsewhere").mkdir()
    (runs / "attack-state").symlink_to(tmp_path / "elsewhere")
    before = _snapshot(tmp_path / "elsewhere")
    code = main(["attack", str(runs / RUN / "best.safetensors"), "--attacks", "pgd10", "--runs-dir", str(runs), "--n-examples", "8"])
    assert code == 2 and _snapshot(tmp_path / "elsewhere") == before
