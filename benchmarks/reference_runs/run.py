"""Train one student with a method's own reference script at advkd's reduced scale, then
evaluate it with advkd's attacks on the same test images as advkd's run.

    python -m benchmarks.reference_runs.run --ref rslad --preset mini --seed 0 \
        --repo zibojia/RSLAD=/path/to/checkout

``--repo OWNER/NAME=PATH`` names a clone (or a bare git dir) holding the pinned commit; without it
the repository is cloned from GitHub into ``--cache`` (network needed). The script is read from the
pinned commit (``git archive``), never from the work tree, edited at its anchors
(:mod:`benchmarks.reference_runs.catalog`), run in a temporary folder, and its student saved as
``<runs-dir>/reference/<dataset>/<advkd run name>-reference/last.safetensors`` with advkd's
metadata, so ``advkd attack`` and ``compare`` read it like any run. A run whose checkpoint and
records exist is skipped; one interrupted is started again (a reference script has no resume).
"""
from __future__ import annotations

import argparse
import io
import json
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path
from typing import Any

import torch
import yaml

from advkd.core.accel import FastPaths, set_threads
from advkd.core.errors import AdvkdError
from advkd.core.files import sha256_file
from advkd.models.checkpoint import save_checkpoint, unwrap
from advkd.training.config import TrainConfig, config_to_dict, resolve_config
from advkd.training.loop import prepare
from advkd.training.rundir import checkpoint_meta
from benchmarks.reference_runs.catalog import REFERENCES, Reference
from benchmarks.reference_runs.edits import EditError, apply_edits, describe
from benchmarks.reference_runs.host import Host, Tee, cpu_only, install_shims

ATTACKS = "clean,pgd10"
ROLES = ("teacher", "clean_teacher", "robust_teacher")


class Refused(Exception):
    """A one-line error for the user (exit 2)."""


def git(repo: Path, *args: str, binary: bool = False) -> Any:
    out = subprocess.run(["git", "-C", str(repo), *args], capture_output=True, check=False)
    if out.returncode != 0:
        raise Refused(f"git {' '.join(args[:2])} in {repo}: {out.stderr.decode(errors='replace').strip().splitlines()[-1:] or ['failed']}")
    return out.stdout if binary else out.stdout.decode().strip()


def locate_repo(name: str, commit: str, given: dict[str, Path], cache: Path) -> Path:
    """The checkout of ``name`` that holds ``commit``: the one given, else a clone in ``cache``."""
    path = given.get(name)
    if path is None:
        path = cache / name.replace("/", "+")
        if not path.exists():
            print(f"cloning https://github.com/{name} into {path}", file=sys.stderr)
            out = subprocess.run(["git", "clone", "--quiet", "--bare", f"https://github.com/{name}", str(path)], capture_output=True, check=False)
            if out.returncode != 0:
                raise Refused(f"could not clone {name} (no network?); pass --repo {name}=PATH to a checkout of commit {commit}")
    if not path.exists():
        raise Refused(f"--repo {name}={path}: no such folder")
    have = subprocess.run(["git", "-C", str(path), "cat-file", "-e", f"{commit}^{{commit}}"], capture_output=True, check=False)
    if have.returncode != 0:
        raise Refused(f"{path} does not hold {name} at the pinned commit {commit} (git fetch it there)")
    return path


def extract(repo: Path, commit: str, into: Path) -> None:
    """The whole tree of ``commit`` into ``into`` (git archive: the pinned files, not the work tree)."""
    data = git(repo, "archive", "--format=tar", commit, binary=True)
    with tarfile.open(fileobj=io.BytesIO(data)) as tar:
        tar.extractall(into, filter="data")


def build_setup(ref: Reference, args: argparse.Namespace):
    teachers = {r: getattr(args, r) for r in ROLES if getattr(args, r)}
    cfg = resolve_config(TrainConfig(kind="distill"), preset=args.preset, set_items=args.set,
                         flags={"method": ref.name, "arch": args.student, "dataset": "cifar10", "teachers": teachers, "seed": args.seed})
    # fp32 NCHW, as the reference runs; teachers are evaluated as advkd's run evaluates them
    return prepare(cfg, runs_dir=args.runs_dir, data_dir=args.data_dir, device=torch.device("cpu"), fast=FastPaths())


def run_script(ref: Reference, host: Host, src: Path, log: Path, echo: bool, data_dir: Path) -> dict[str, Any]:
    """Execute the edited script in ``src`` (its folder is the working directory and first on
    sys.path, as ``python script.py`` would have it); returns its globals."""
    script = src / ref.script
    text = apply_edits(script.read_text(), ref.edits, source=f"{ref.repo}/{ref.script}")
    script.write_text(text)
    cfg = host.setup.cfg
    fill = {"epochs": cfg.epochs, "batch_size": cfg.batch_size, "lr": cfg.lr, "weight_decay": cfg.weight_decay, "seed": cfg.seed}
    argv = [a.format(**fill) for a in ref.argv]
    before = set(sys.modules)
    old_cwd, old_argv, old_path, old_out = os.getcwd(), sys.argv, list(sys.path), sys.stdout
    ns: dict[str, Any] = {"__name__": "__main__", "__file__": str(script), "REF": host}
    torch.manual_seed(cfg.seed)  # for scripts that build the student before seeding (AdaAD seeds in __main__)
    with open(log, "w") as handle:
        try:
            os.chdir(script.parent)
            sys.argv = [str(script), *argv]
            sys.path.insert(0, str(script.parent))
            sys.stdout = Tee(handle, old_out if echo else None)
            with cpu_only(), install_shims(ref.shims, data_dir):
                exec(compile(text, str(script), "exec"), ns)  # noqa: S102 - the pinned reference, run on purpose
        finally:
            sys.stdout, sys.argv, sys.path[:] = old_out, old_argv, old_path
            os.chdir(old_cwd)
            for name in set(sys.modules) - before:  # the script's own modules (rslad_loss, networks, ...)
                sys.modules.pop(name, None)
    return ns


def evaluate(ckpt: Path, args: argparse.Namespace) -> None:
    cmd = [sys.executable, "-m", "advkd", "attack", str(ckpt), "--attacks", args.attacks, "--n-examples", str(args.n_examples),
           "--runs-dir", str(args.runs_dir), "--data-dir", str(args.data_dir), "--format", "json", "--no-channels-last"]
    out = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if out.returncode != 0:
        raise Refused(f"advkd attack {ckpt} failed: {(out.stderr.strip().splitlines() or ['?'])[-1]}")


def records_exist(runs_dir: Path, ckpt: Path, attacks: str, n: int) -> bool:
    """Whether every attack of ``attacks`` has a record of this very file (its sha256: a checkpoint
    trained again since its records were written counts as not evaluated)."""
    store = runs_dir / "results.jsonl"
    if not store.exists() or not ckpt.exists():
        return False
    sha = sha256_file(ckpt)
    want = set(attacks.split(","))
    for line in store.read_text().splitlines():
        try:
            rec = json.loads(line)
        except ValueError:
            continue
        if rec.get("sha256") == sha and rec.get("n_examples") == n:
            want.discard(rec.get("attack"))
    return not want


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.reference_runs.run", description=__doc__.split("\n\n")[0])
    p.add_argument("--ref", required=True, choices=sorted(REFERENCES))
    p.add_argument("--preset", default="mini")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--student", default="resnet18")
    for role in ROLES:
        p.add_argument(f"--{role.replace('_', '-')}", dest=role, help="as advkd distill takes it (default: the preset's)")
    p.add_argument("--set", action="append", default=[], help="key=value, as advkd distill --set")
    p.add_argument("--repo", action="append", default=[], metavar="OWNER/NAME=PATH")
    p.add_argument("--cache", type=Path, default=Path.home() / ".cache" / "advkd" / "reference-repos")
    p.add_argument("--runs-dir", type=Path, default=Path(os.environ.get("ADVKD_RUNS_DIR", "runs")))
    p.add_argument("--data-dir", type=Path, default=Path(os.environ.get("ADVKD_DATA_DIR", "data")))
    p.add_argument("--attacks", default=ATTACKS)
    p.add_argument("--n-examples", type=int, default=1000)
    p.add_argument("--echo", action="store_true", help="also print the script's output")
    args = p.parse_args(argv)
    try:
        return _main(args)
    except (Refused, AdvkdError, EditError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2


def _main(args: argparse.Namespace) -> int:
    ref = REFERENCES[args.ref]
    set_threads(None)  # ADVKD_THREADS, as advkd's own runs take it
    given: dict[str, Path] = {}
    for item in args.repo:
        name, sep, path = item.partition("=")
        if not sep:
            raise Refused(f"--repo {item!r}: expected OWNER/NAME=PATH")
        given[name] = Path(path)
    repos = {name: locate_repo(name, commit, given, args.cache) for name, commit in ref.repos().items()}
    setup = build_setup(ref, args)
    cfg = setup.cfg
    name = f"{cfg.name}-reference"
    out = args.runs_dir / "reference" / cfg.dataset / name
    ckpt = out / "last.safetensors"
    if records_exist(args.runs_dir, ckpt, args.attacks, args.n_examples):
        print(f"{name}: done ({ckpt})")
        return 0
    if not ckpt.exists():
        host = Host(setup)
        with tempfile.TemporaryDirectory(prefix=f"advkd-ref-{ref.name}-") as tmp:
            src = Path(tmp)
            extract(repos[ref.repo], ref.commit, src)
            for f in ref.extra:
                (src / Path(ref.script).parent / (f.as_name or f.path)).write_bytes(git(repos[f.repo], "show", f"{f.commit}:{f.path}", binary=True))
            work = out.with_name(out.name + ".partial")
            shutil.rmtree(work, ignore_errors=True)
            work.mkdir(parents=True)
            print(f"{name}: {ref.repo}@{ref.commit[:10]} {ref.script}, {cfg.epochs} epochs x {host.train_images} images, seed {cfg.seed}", flush=True)
            start = time.perf_counter()
            ns = run_script(ref, host, src, work / "reference.log", args.echo, args.data_dir)
            seconds = time.perf_counter() - start
            for value in list(ns.values()):  # files the script left open (B-MTARD's log): flushed before they are copied
                if isinstance(value, io.IOBase) and not value.closed:
                    value.flush()
            for side in Path(src / Path(ref.script).parent).glob("output_*.txt"):  # B-MTARD's weight and temperature trace
                shutil.copy(side, work / side.name)
        student = unwrap(ns[ref.student_var]).eval()
        meta = checkpoint_meta(setup, cfg.epochs, {"epoch": cfg.epochs})
        meta.update(name=name, config={**meta["config"], "name": name},  # records name the reference run, not advkd's
                    reference={"repo": ref.repo, "commit": ref.commit, "script": ref.script})
        save_checkpoint(work / "last.safetensors", student, meta)
        (work / "config.yaml").write_text(yaml.safe_dump(config_to_dict(cfg), sort_keys=False))
        (work / "reference.yaml").write_text(yaml.safe_dump({
            "repo": ref.repo, "commit": ref.commit, "script": ref.script, "argv": ref.argv,
            "extra": [f.__dict__ for f in ref.extra], "shims": ref.shims, "edits": describe(ref.edits),
            "train_seconds": round(seconds, 1), "torch": str(torch.__version__), "threads": torch.get_num_threads(),
        }, sort_keys=False))
        shutil.rmtree(out, ignore_errors=True)
        work.rename(out)
        print(f"{name}: trained in {seconds:.0f} s -> {ckpt}", flush=True)
    evaluate(ckpt, args)
    print(f"{name}: evaluated ({args.attacks} on test 0-{args.n_examples - 1})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
