"""The sdist can run its own tests: helpers, conftest and workers are in it, with the license."""
from __future__ import annotations

import subprocess
import sys
import tarfile
from pathlib import Path

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
    for needed in ("examples/notebook_api.py", "tests/conftest.py", "tests/tiny_nets.py", "tests/ddp_worker.py", "LICENSE", "advkd/presets/small.yaml", "advkd/paper_tables/results.csv"):
        assert needed in names, needed
