"""``advkd report ID --plan``: the runnable commands that would fill a table's empty cells.

For every empty cell the plan derives the jobs behind it — pretrain each teacher, train the
student (or evaluate a teacher row directly), attack it with the table's suite, transfer-attack
from the surrogate — dedupes them, drops the runs that are already complete, and prints them in
dependency order (teachers, students, attacks, transfers). Every command uses ``--resume``, so
piping the plan into a shell is safe to repeat. Run names are the CLI's deterministic defaults,
which is how attack commands know the checkpoint paths before the runs exist.
"""
from __future__ import annotations

import re
import shlex
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from advkd.core.errors import AdvkdError
from advkd.core.files import sha256_file
from advkd.core.runs import BEST, load_run, run_dir
from advkd.evaluation.records import RESULTS_FILE, read_records
from advkd.evaluation.suites import DEFAULT_N_EXAMPLES, SUITES, suite_attacks
from advkd.methods import METHODS
from advkd.report import build_table, canonical_id
from advkd.report.budget import AttackWork, TrainWork, expected_accuracy
from advkd.report.match import CSV_TO_RECORD_ATTACK
from advkd.training.config import cached_preset, variant_name

ROLE_ORDER = ("clean_teacher", "robust_teacher", "teacher")
PLAN_FORMATS = ("sh", "slurm")
SUITE_BY_TABLE = {
    "adaad-table1": "adaad", "adaad-table2": "adaad", "adaad-table3": "adaad", "adaad-table5": "adaad",
    "bmtard-table2": "bmtard-white", "bmtard-table3": "bmtard-white", "bmtard-table4": "bmtard-white",
    "bmtard-table5": "bmtard-black", "bmtard-table6": "bmtard-black", "bmtard-table7": "bmtard-white",
    "bmtard-table8": "bmtard-white", "bmtard-table10": "bmtard-white", "bmtard-table11": "bmtard-white",
}
TRANSFER_SUITE = {"adaad": "adaad-transfer", "bmtard": "bmtard-transfer"}
NOTE_PARAMS = {"init_temperature": ("tau_adv_init", "tau_nat_init"), "nlb_exponent": ("nlb_beta",)}
TEACHER_FREE = ("natural", "pgd-at", "trades", "score")
ARCH_ALIASES = {"wrn34-10-c": "wrn34-10"}  # B-MTARD Table XI's clean WRN-34-10-C: a naturally trained WRN-34-10


@dataclass(frozen=True)
class Job:
    stage: int  # 0 teachers, 1 students, 2 attacks, 3 transfers
    key: str
    command: str
    run: Path | None = None  # the run dir the job creates (skipped when complete)
    work: TrainWork | AttackWork | None = None  # what it computes, for the budget


def _presets(paper: str, preset: str) -> tuple[str, str]:
    """(student preset, teacher preset) for a paper at a scale."""
    if preset == "mini":
        return "mini", "mini"
    if preset == "paper":
        return f"{paper}-paper", f"{paper}-teacher"
    return preset, preset


def _teacher_method(role: str, arch: str, paper: str, preset: str) -> str:
    if role == "clean_teacher":
        return "natural"
    if paper == "adaad" and preset == "paper":
        return "pgd-at"  # the AdaAD repo's own PGD-AT WRN-34-10 teacher (spec 4.1, open item 8)
    return "trades"


def _name(arch: str, method: str, teachers: dict[str, str], preset: str, params: dict[str, float], seed: int = 0) -> str:
    """The CLI's default run name (``advkd.core.runs.default_name``) for these settings."""
    parts = [arch, method] + [teachers[r] for r in sorted(teachers)] + [cached_preset(preset).name]
    if params:
        parts.append(variant_name(params))
    return "-".join(parts + [f"s{seed}"])


def _complete(path: Path) -> bool:
    info = load_run(path)
    return info is not None and info.complete


def _q(*args: str) -> str:
    return " ".join(shlex.quote(a) for a in args)


class Planner:
    """Collects the jobs behind a table's cells; :meth:`commands` prints what is still to run.

    The student preset's ``evaluation`` section sets the plan's evaluation: ``n_examples`` (unless
    ``--n-examples`` is given), ``attack_examples`` (slow attacks on fewer images) and ``seeds``
    (method -> number of seeds to train and attack: 0, 1, ...).
    """

    def __init__(self, paper: str, preset: str, runs_dir: Path, n_examples: int | None = None) -> None:
        self.paper, self.runs_dir = paper, runs_dir
        self.like: dict[str, str] = {}  # a --with method -> the built-in row it copies (its seeds and its price)
        self.method_args: dict[str, str] = {}  # a --with method -> how its command names it (a module:Class stays one)
        self.student_preset, self.teacher_preset = _presets(paper, preset)
        evaluation = cached_preset(self.student_preset).evaluation
        n = n_examples if n_examples is not None else evaluation.get("n_examples")
        self.n_examples: int | None = n  # None: each attack command's own default; 0: the whole test set
        self.eval_args = [] if n is None else ["--n-examples", str(n)]
        self.attack_examples: dict[str, int] = dict(evaluation.get("attack_examples") or {})
        self.seeds: dict[str, int] = dict(evaluation.get("seeds") or {})
        self.scale = preset
        self.jobs: dict[str, Job] = {}
        self.shared: dict[str, set[str]] = {}  # run trained -> runs not trained because it fills their cells
        self.paper_arch: dict[Path, str] = {}  # teacher run -> the paper arch it was trained as
        self.attacks: dict[Path, dict[str, None]] = {}  # checkpoint -> attack ids its cells need (ordered)
        self.standins: dict[Path, str] = {}  # run dir -> the network it trains
        self.accuracy = expected_accuracy(evaluation)  # the budget's prior for attack costs
        self.recorded: dict[tuple[str, str], set[str]] = {}  # (checkpoint, attack) -> sha256s of the files attacked
        for r in read_records(runs_dir / RESULTS_FILE):
            self.recorded.setdefault((str(r.get("checkpoint")), str(r.get("attack"))), set()).add(str(r.get("sha256") or ""))

    def seeds_of(self, method: str) -> range:
        seeds = self.seeds.get(method, self.seeds.get(self.like.get(method, ""), 1))
        return range(max(1, int(seeds)))

    def add(self, job: Job, requested: str = "") -> Path | None:
        """Add ``job`` unless one with its key exists (the same stand-in networks and settings:
        one run fills the cells of both); returns the run of the job kept. ``requested``: the
        run name the cell asked for, noted when another run fills it."""
        kept = self.jobs.setdefault(job.key, job)
        for name in {requested, job.run.name if job.run else ""} - {"", kept.run.name if kept.run else ""}:
            self.shared.setdefault(kept.run.name, set()).add(name)
        return kept.run

    def shared_lines(self) -> list[str]:
        return [f"# {kept} also fills the cells of {', '.join(sorted(twins))} (the same stand-in networks at this scale)"
                for kept, twins in sorted(self.shared.items())]

    def standin(self, preset: str, arch: str) -> str:
        """The network a preset trains for ``arch`` (the arch itself without a mapping)."""
        return cached_preset(preset).arch_map.get(arch, arch)

    def twins(self, preset: str, arch: str) -> list[str]:
        """``arch``, then the other paper architectures the preset trains as the same stand-in."""
        mapping = cached_preset(preset).arch_map
        return [arch] + sorted(a for a, t in mapping.items() if t == mapping.get(arch, arch) and a != arch)

    def _existing(self, kind: str, dataset: str, names: list[str]) -> int:
        """Index of the first name whose run is on disk (0 when none is): a twin already trained is reused."""
        return next((i for i, n in enumerate(names) if run_dir(self.runs_dir, kind, dataset, n).exists()), 0)

    def teacher(self, role: str, arch: str, dataset: str) -> Path:
        """Job that pretrains a teacher; returns its best checkpoint path (one run per stand-in)."""
        arch = ARCH_ALIASES.get(arch, arch)
        method = _teacher_method(role, arch, self.paper, self.scale)
        preset = self.student_preset if (method == "pgd-at" and arch in ("resnet18", "resnet34", "vgg16")) else self.teacher_preset
        key = f"teacher:{dataset}:{self.standin(preset, arch)}:{method}:{preset}"
        requested = _name(arch, method, {}, preset, {})
        if key not in self.jobs:
            twins = self.twins(preset, arch)
            arch = twins[self._existing("pretrain-teacher", dataset, [_name(a, method, {}, preset, {}) for a in twins])]
        name = _name(arch, method, {}, preset, {})
        path = run_dir(self.runs_dir, "pretrain-teacher", dataset, name)
        cmd = _q("advkd", "pretrain-teacher", "--arch", arch, "--method", method, "--dataset", dataset, "--preset", preset, "--runs-dir", str(self.runs_dir), "--resume")
        kept = self.add(Job(0, key, cmd, path, TrainWork("pretrain-teacher", method, arch, dataset, preset)), requested)
        self.paper_arch.setdefault(kept, arch)
        self.standins.setdefault(kept, self.standin(preset, arch))
        return kept / BEST

    def student(self, row, teachers: dict[str, str], params: dict[str, float | str], seed: int = 0) -> Path:
        paths = {role: self.teacher(role, arch, row.dataset) for role, arch in teachers.items()}
        archs = {role: self.paper_arch[paths[role].parent] for role in paths}  # the teachers' runs as kept
        preset = self.student_preset
        teacher_runs = ",".join(f"{role}={paths[role].parent.name}" for role in sorted(paths))
        key = f"student:{row.dataset}:{self.standin(preset, row.student)}:{row.method}:{teacher_runs}:{variant_name(params)}:{seed}"
        requested = _name(row.student, row.method, {r: ARCH_ALIASES.get(a, a) for r, a in teachers.items()}, preset, params, seed)
        student = row.student
        if key not in self.jobs:
            twins = self.twins(preset, row.student)
            student = twins[self._existing("distill", row.dataset, [_name(a, row.method, archs, preset, params, seed) for a in twins])]
        name = _name(student, row.method, archs, preset, params, seed)
        path = run_dir(self.runs_dir, "distill", row.dataset, name)
        args = ["advkd", "distill", "--method", self.method_args.get(row.method, row.method), "--student", student, "--dataset", row.dataset, "--preset", preset]
        for role in sorted(paths):
            args += [f"--{role.replace('_', '-')}", str(paths[role])]
        for k, value in sorted(params.items()):
            args += ["--set", f"method.{k}={value}"]
        if seed:
            args += ["--seed", str(seed)]
        args += ["--runs-dir", str(self.runs_dir), "--resume"]
        work = TrainWork("distill", row.method, student, row.dataset, preset,
                         tuple((role, self.standins[paths[role].parent]) for role in sorted(paths)),
                         tuple((k, str(v)) for k, v in sorted(params.items())), seed, price_as=self.like.get(row.method, ""))
        kept = self.add(Job(1, key, _q(*args), path, work), requested)
        self.standins.setdefault(kept, self.standin(preset, student))
        return kept / BEST

    def attack(self, ckpt: Path, suite: str, attacks: list[str] | None = None) -> None:
        """Ask for ``attacks`` (default: the whole ``suite``) on ``ckpt``; one command per checkpoint
        runs the union of what its cells ask for, less what results.jsonl already has for it."""
        wanted = self.attacks.setdefault(ckpt, {})
        for a in suite_attacks(suite) if attacks is None else attacks:
            if a != "clean":
                wanted[a] = None

    def _attack_jobs(self) -> list[Job]:
        jobs = []
        for ckpt, wanted in self.attacks.items():
            current = sha256_file(ckpt) if any((str(ckpt), a) in self.recorded for a in wanted) and ckpt.is_file() else None
            missing = [a for a in wanted if not self._attacked(ckpt, a, current)]
            if not missing:
                continue
            suite = next((name for name in SUITES.names() if set(suite_attacks(name)) - {"clean"} == set(missing)), None)
            which = ["--suite", suite] if suite else ["--attacks", ",".join(missing)]
            limits = [f"--attack-examples={a}={n}" for a, n in self.attack_examples.items() if a in missing]
            work = self._attack_work(ckpt, missing)
            jobs.append(Job(2, f"attack:{ckpt}", _q("advkd", "attack", str(ckpt), *which, *self.eval_args, *limits, "--runs-dir", str(self.runs_dir)), work=work))
        return jobs

    def _attacked(self, ckpt: Path, attack: str, current: str | None) -> bool:
        """A record of ``attack`` on ``ckpt`` counts only if it attacked the file there now: a
        resumed run that found a new best, or a run trained again, is attacked again."""
        shas = self.recorded.get((str(ckpt), attack))
        return shas is not None and (current is None or current in shas)

    def _attack_work(self, ckpt: Path, attacks: list[str], surrogate: Path | None = None) -> AttackWork | None:
        arch = self.standins.get(ckpt.parent)
        if arch is None:
            return None
        limits = tuple((a, k) for a, k in self.attack_examples.items() if a in attacks)
        crafter = self.standins.get(surrogate.parent, "") if surrogate is not None else ""
        n = DEFAULT_N_EXAMPLES if self.n_examples is None else self.n_examples
        return AttackWork(arch, self.dataset_of(ckpt), tuple(attacks), n, limits, self.accuracy, crafter)

    def dataset_of(self, ckpt: Path) -> str:
        """The dataset of a run (its dir sits in ``<runs>/<kind>/<dataset>/<name>``)."""
        return ckpt.parent.parent.name

    def transfer(self, surrogate: Path, target: Path) -> None:
        suite = TRANSFER_SUITE[self.paper]
        work = self._attack_work(target, [a for a in suite_attacks(suite) if a != "clean"], surrogate)
        self.add(Job(3, f"transfer:{surrogate}:{target}", _q("advkd", "transfer-attack", "--surrogate", str(surrogate), "--target", str(target), "--suite", suite, *self.eval_args, "--runs-dir", str(self.runs_dir)), work=work))

    def pending(self) -> list[Job]:
        """The jobs still to run, in dependency order (teachers, students, attacks, transfers)."""
        jobs = sorted([*self.jobs.values(), *self._attack_jobs()], key=lambda j: j.stage)
        return [j for j in jobs if j.run is None or not _complete(j.run)]

    def commands(self) -> list[str]:
        return [j.command for j in self.pending()]

    def n_jobs(self) -> int:
        return len(self.jobs) + len(self.attacks)


def _params_from_note(note: str) -> dict[str, float]:
    out: dict[str, float] = {}
    for key, targets in NOTE_PARAMS.items():
        m = re.search(rf"{key}=([0-9.]+)", note)
        if m and float(m.group(1)) != 1.0:
            out.update({t: float(m.group(1)) for t in targets})
    return out


def _teachers_of(row) -> dict[str, str]:
    if row.clean_teacher or row.robust_teacher:
        if row.method in ("bmtard", "mtard", "lmtn"):
            return {"clean_teacher": row.clean_teacher, "robust_teacher": row.robust_teacher}
        return {"teacher": row.robust_teacher} if row.robust_teacher else {}
    return {"teacher": row.teacher} if row.teacher else {}


def _keep(row, only: dict[str, str]) -> bool:
    """Cell filter: ``{"student": "resnet18", "teacher": "wrn34-10"}``; a teacher filter also keeps
    the teacher-free baselines printed in that teacher's block."""
    for key, want in only.items():
        have = getattr(row, key, None)
        if have is None:
            raise AdvkdError(f"--only {key}=...: unknown column; valid: dataset, student, teacher, clean_teacher, robust_teacher, method, attack")
        wants = want.split(",")  # method=bmtard,mtard,rslad keeps any of them
        if have not in wants and not (key == "teacher" and not have and any(f"block teacher {w}" in row.note for w in wants)):
            return False
    return True


def table_planner(table_id: str, *, preset: str, runs_dir: Path, only: dict[str, str] | None = None,
                  n_examples: int | None = None, with_methods: list[str] | None = None) -> tuple[Planner, list[str]]:
    """The jobs behind a table's empty cells (and the plan's note lines), before any is printed.
    A ``with_methods`` row is planned like the row it copies: its template's seeds and price."""
    csv_id = canonical_id(table_id)
    paper = csv_id.split("-")[0]
    table = build_table(csv_id, read_records(runs_dir / RESULTS_FILE), with_methods=with_methods)
    planner = Planner(paper, preset, runs_dir, n_examples)
    planner.like = dict(table.with_templates)
    planner.method_args = {METHODS.canonical(m): m for m in with_methods or []}
    notes: list[str] = [f"# {m}: not in the paper (--with); planned and priced like the {t} row it stands beside"
                        for m, t in table.with_templates.items()]
    for cell in table.iter_cells():
        row = cell.csv
        seeded = len(planner.seeds_of(row.method)) > 1  # a filled cell may still lack its other seeds
        if (cell.ours is not None and not seeded) or not _keep(row, only or {}):
            continue
        if row.metric == "knowledge_scale":
            notes.append("# B-MTARD Table I is computed from a finished bmtard run: run the bmtard-table3 plan, then `advkd report bmtard-table1`")
            continue
        suite = SUITE_BY_TABLE.get(csv_id, "adaad")
        attack = [CSV_TO_RECORD_ATTACK.get(row.attack, row.attack)]
        if row.method == "teacher":
            role = "clean_teacher" if row.clean_teacher else "robust_teacher"
            arch = row.clean_teacher or row.robust_teacher or row.teacher
            planner.attack(planner.teacher(role, arch, row.dataset), suite, attack)
            continue
        teachers = _teachers_of(row)
        if csv_id == "adaad-table4":  # the CSV's teacher column holds the transfer surrogate
            ckpt = planner.student(row, {"teacher": _adaad_table4_teacher(row.dataset)} if row.method not in TEACHER_FREE else {}, {})
            planner.transfer(_surrogate(planner, row.teacher, row.dataset), ckpt)
            continue
        for seed in planner.seeds_of(row.method):
            ckpt = planner.student(row, teachers, _params_from_note(row.note), seed)
            if row.attack.startswith("transfer-"):
                planner.transfer(planner.teacher("robust_teacher", row.robust_teacher or "wrn34-10", row.dataset), ckpt)
            else:
                planner.attack(ckpt, suite, attack)
    return planner, sorted(set(notes))


def plan_script(planner: Planner, what: str, preset: str, notes: list[str], fmt: str, estimate: bool,
            log: Callable[[str], None] | None, device: str = "auto") -> str:
    """The plan's text: a header, the notes, then one command per pending job (sh, each after its
    estimate when ``estimate``) or the Slurm submission script."""
    pending = planner.pending()
    head = f"# advkd plan for {what} at {preset} scale: {planner.n_jobs()} jobs, {len(pending)} still to run"
    if fmt == "slurm":
        from advkd.report.slurm import slurm_script

        return slurm_script(pending, [head, *notes, *planner.shared_lines()], cached_preset(planner.student_preset).scale)
    if not estimate or not pending:
        return "\n".join([head, *notes, *planner.shared_lines(), *(j.command for j in pending)])
    from advkd.core.distributed import pick_device
    from advkd.report.budget import device_text, duration, estimate_works

    priced_on = pick_device(device)
    prices = estimate_works([j.work for j in pending], runs_dir=planner.runs_dir, device=priced_on, log=log)
    total = sum(p.seconds for p in prices if p is not None)
    unpriced = sum(p is None for p in prices)
    head += f"; about {duration(total)} on {device_text(priced_on)}" + (f" for the {len(pending) - unpriced} priced" if unpriced else "")
    body: list[str] = []
    for job, price in zip(pending, prices):
        body += [f"# about {duration(price.seconds)}: {price.what}" if price else "# (no estimate)", job.command]
    return "\n".join([head, *notes, *planner.shared_lines(), *body])


def _surrogate(planner: Planner, arch: str, dataset: str) -> Path:
    """AdaAD Table 4 surrogates: ResNet-34 / VGG-16 trained by PGD-AT (spec single-teacher 3.2)."""
    preset = planner.student_preset
    name = _name(arch, "pgd-at", {}, preset, {})
    path = run_dir(planner.runs_dir, "pretrain-teacher", dataset, name)
    cmd = _q("advkd", "pretrain-teacher", "--arch", arch, "--method", "pgd-at", "--dataset", dataset, "--preset", preset, "--runs-dir", str(planner.runs_dir), "--resume")
    kept = planner.add(Job(0, f"teacher:{dataset}:{name}", cmd, path, TrainWork("pretrain-teacher", "pgd-at", arch, dataset, preset)))
    planner.standins.setdefault(kept, planner.standin(preset, arch))
    return path / BEST


def _adaad_table4_teacher(dataset: str) -> str:
    """The distillation teacher of AdaAD Table 4's students is UNCONFIRMED: WRN-34-20 (spec open item 11)."""
    return "wrn34-20"
