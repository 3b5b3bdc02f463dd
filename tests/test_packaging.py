"""The sdist can run its own tests: helpers, conftest and workers are in it, with the license."""
from __future__ import annotations

import os
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def test_sdist_carries_the_tests_their_helpers_and_the_license(tmp_path):
    code = "import sys; from setuptools import build_meta; print(build_meta.build_sdist(sys.argv[1]))"
    out = subprocess.run([sys.executable, "-c", code, str(tmp_path)], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    (sdist,) = tmp_path.glob("advkd-*.tar.gz")
    with tarfile.open(sdist) as tar:
        names = {n.split("/", 1)[1] for n in tar.getnames() if "/" in n}
    helpers = {p.relative_to(ROOT).as_posix() for p in (ROOT / "tests").glob("*.py")}
    assert helpers <= names, sorted(helpers - names)
    for needed in ("examples/notebook_api.py", "tests/conftest.py", "tests/tiny_nets.py", "tests/ddp_worker.py", "LICENSE", "presets/small.yaml", "advkd/paper_tables/results.csv",
                   "tools/cli_reference.py", "docs/cli.md"):  # tests/test_cli_reference.py
        assert needed in names, needed


@pytest.mark.slow  # builds a wheel and starts advkd four times (make test-slow)
def test_the_wheel_runs_outside_the_checkout(tmp_path):
    """Built, unpacked away from the source tree and run from another folder: presets, paper tables
    and the commands work without the checkout (the editable install is bypassed)."""
    import zipfile

    code = "import sys; from setuptools import build_meta; print(build_meta.build_wheel(sys.argv[1]))"
    out = subprocess.run([sys.executable, "-c", code, str(tmp_path)], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    (wheel,) = tmp_path.glob("advkd-*.whl")
    site = tmp_path / "site"
    with zipfile.ZipFile(wheel) as z:
        z.extractall(site)
    assert (site / "advkd" / "presets" / "small.yaml").is_file() and (site / "advkd" / "paper_tables" / "results.csv").is_file()
    work = tmp_path / "elsewhere"
    work.mkdir()
    env = {**os.environ, "PYTHONPATH": str(site), "ADVKD_RUNS_DIR": str(work / "runs"), "COLUMNS": "200"}
    probe = "import advkd, sys; assert advkd.__file__.startswith(sys.argv[1]), advkd.__file__"
    assert subprocess.run([sys.executable, "-c", probe, str(site)], cwd=work, env=env, timeout=120).returncode == 0
    for args in (["report", "list", "--format", "json"], ["report", "table2", "--plan", "--preset", "small"], ["results", "--format", "csv"]):
        run = subprocess.run([sys.executable, "-m", "advkd", *args], cwd=work, env=env, capture_output=True, text=True, timeout=120)
        assert run.returncode == 0, (args, run.stderr[-1000:])
