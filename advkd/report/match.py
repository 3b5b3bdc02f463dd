"""Which result record fills which cell.

Every cell comes from one CSV row; :func:`spec_for` turns that row into a :class:`CellSpec` (what a
record must have), :func:`matches` tests one record against it. Rules (``paper_arch`` is used for
every architecture, never ``arch``, so mini runs match through the mini preset's arch mapping):

- **dataset** equal; **student** ``paper_arch`` = the CSV ``student``; **method** equal (CSV
  ``pgd-at`` is also B-MTARD's "SAT").
- **teachers**: AdaAD rows: ``teachers.teacher.paper_arch`` = CSV ``teacher`` (empty = no teacher,
  e.g. the PGD-AT / TRADES rows, which therefore fill every teacher block from one record).
  AdaAD Table 4: the CSV ``teacher`` is the transfer SURROGATE, matched against
  ``surrogate.paper_arch`` (and ``surrogate.method`` = pgd-at when recorded); the distillation
  teacher is unconstrained (UNCONFIRMED: the paper does not say). B-MTARD rows with both teachers: ``teachers.clean_teacher`` / ``teachers.robust_teacher``;
  single-teacher baselines: ``teachers.teacher`` = CSV ``robust_teacher``. ``wrn34-10-c`` (Table XI)
  is a clean teacher with paper_arch ``wrn34-10`` whose training method, when recorded, is natural.
- **teacher rows** (CSV method ``teacher``): records of ``pretrain-teacher`` checkpoints
  (``teachers`` empty), ``paper_arch`` = the CSV teacher column; clean teachers are ``natural``,
  robust ones any other training method.
- **attack**: the record's attack id; CSV ``pgd``/``cw``/``transfer-pgd`` are ``pgd10``/``cw2``/
  ``transfer-pgd10``. B-MTARD transfer columns also need ``surrogate.paper_arch`` = the surrogate
  the CSV note names.
- **variants**: ``train_eps``, ``method_params.eps`` and the eps of L-inf attacks (when present)
  must be 8/255 (within 2%, so the recipes' 0.031 counts; AdaAD Fig. 2's 32/255 does not). For
  ``bmtard``/``mtard`` the ablated settings (``tau_adv_init``, ``tau_nat_init``, ``nlb_beta``,
  ``ebb``, ``nlb``; absent = default) must be the defaults, except in the row that ablates them
  (Tables VII/VIII, values parsed from the CSV note). Other ``method_params`` do not block a match
  but are flagged on the cell.
- **W-Robust** cells take the attack record as above and the newest ``clean`` record of the same
  checkpoint (sha256) and show (clean + robust) / 2. An attack scored on a subset of the
  evaluation set (``--attack-examples``) carries its own ``clean_accuracy`` on that subset, used instead.
- **preset**: a record made under one paper's preset (``adaad-*`` / ``bmtard-*``: those papers'
  training recipes differ, e.g. AdaAD's PGD-AT vs B-MTARD's SAT) fills only that paper's tables;
  any other preset (``mini``, ``official``, custom YAML, none) may fill either paper's tables.
- Several matches: the newest (``time``, then position in the file) wins and the cell says so.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import datetime, timezone
from fractions import Fraction
from typing import Any

from advkd.report.layouts import NOTE_PARAMS, TableId
from advkd.report.paper import PaperRow

EPS = 8 / 255
# Training recipes write the papers' 8/255 as 0.031 (TRADES, Bag-of-Tricks teachers): 2% tolerance.
EPS_TOL = 0.02 * EPS

# CSV attack name -> result-record attack id (everything else is identical).
CSV_TO_RECORD_ATTACK = {"pgd": "pgd10", "cw": "cw2", "transfer-pgd": "transfer-pgd10"}

# Method names users may find in older records -> registry names.
METHOD_ALIASES = {"sat": "pgd-at", "at": "pgd-at", "pgdat": "pgd-at", "b-mtard": "bmtard", "fairard": "fair-ard"}

# Settings ablated by B-MTARD Tables VII/VIII and Fig. 3, with each method's default.
ABLATION_DEFAULTS: dict[str, dict[str, float | bool]] = {
    "bmtard": {"tau_adv_init": 1.0, "tau_nat_init": 1.0, "nlb_beta": 1.0, "ebb": True, "nlb": True},
    "mtard": {"tau_adv_init": 1.0, "tau_nat_init": 1.0, "nlb_beta": 1.0, "ebb": False, "nlb": True},
}

KNOWLEDGE_KIND = "knowledge_scale"


@dataclass(frozen=True)
class CellSpec:
    """What a record must carry to fill one cell."""

    kind: str  # "student" | "teacher" | "knowledge"
    dataset: str
    paper: str = ""  # "adaad" | "bmtard"
    arch: str = ""  # student paper_arch (student rows) or teacher paper_arch (teacher rows); "" = any
    method: str = ""  # student rows and knowledge rows
    natural: bool | None = None  # teacher rows: clean (natural) teacher or robust teacher
    teachers: tuple[tuple[str, str], ...] = ()  # (role, paper_arch)
    natural_clean_teacher: bool = False  # Table XI's WRN-34-10-C
    surrogate: str = ""
    attack: str = ""  # record attack id ("" for knowledge cells)
    metric: str = "acc"
    params: tuple[tuple[str, tuple[Any, ...]], ...] = ()  # ablation key -> allowed values
    role: str = ""  # knowledge cells: clean_teacher | robust_teacher
    balance: str = ""  # knowledge cells: before | after
    surrogate_method: str = ""  # AdaAD Table 4: the surrogate's training method, when the record has it


def record_attack(csv_attack: str) -> str:
    return CSV_TO_RECORD_ATTACK.get(csv_attack, csv_attack)


def spec_for(tid: TableId, row: PaperRow) -> CellSpec:
    """The matching rule of the cell that CSV ``row`` of table ``tid`` prints."""
    if row.metric == "knowledge_scale":
        role = "clean_teacher" if row.clean_teacher else "robust_teacher"
        arch = row.clean_teacher or row.robust_teacher
        balance = "before" if "(No Balance)" in row.note else "after"
        return CellSpec(
            kind="knowledge", dataset=row.dataset, paper=row.paper, method="bmtard", teachers=((role, arch),), metric=row.metric,
            role=role, balance=balance, params=tuple(sorted(_default_params("bmtard").items())),
        )
    if row.method == "teacher":
        arch = row.teacher or row.clean_teacher or row.robust_teacher
        return CellSpec(
            kind="teacher", dataset=row.dataset, paper=row.paper, arch=arch, natural=bool(row.clean_teacher),
            attack=record_attack(row.attack), metric=row.metric,
        )

    teachers: list[tuple[str, str]] = []
    surrogate = surrogate_method = ""
    natural_clean = False
    if tid.paper == "adaad":
        if tid.csv_id == "adaad-table4":
            surrogate, surrogate_method = row.teacher, "pgd-at"  # the CSV teacher column holds the PGD-AT surrogate
        elif row.teacher:
            teachers.append(("teacher", row.teacher))
    else:
        if row.clean_teacher and row.robust_teacher:
            clean = row.clean_teacher
            if clean.endswith("-c"):  # WRN-34-10-C: a naturally trained WRN-34-10
                clean, natural_clean = clean[: -len("-c")], True
            teachers += [("clean_teacher", clean), ("robust_teacher", row.robust_teacher)]
        elif row.robust_teacher:
            teachers.append(("teacher", row.robust_teacher))
        if row.attack.startswith("transfer-"):
            surrogate = _note_surrogate(row)

    params = dict(_default_params(row.method))
    for name, value in row.note_params().items():
        if name in NOTE_PARAMS:
            for key in NOTE_PARAMS[name][0]:
                params[key] = (param_value(value),)
    if (row.method == "bmtard" and row.dataset == "cifar10" and row.student == "mobilenetv2"
            and tid.csv_id in ("bmtard-table4", "bmtard-table6")):
        # Paper: initial temperatures 2 for MobileNet-v2 on CIFAR-10 (symbol lost; UNCONFIRMED): accept 1 or 2.
        params["tau_adv_init"] = params["tau_nat_init"] = (1.0, 2.0)
    return CellSpec(
        kind="student", dataset=row.dataset, paper=row.paper, arch=row.student, method=row.method, teachers=tuple(teachers),
        natural_clean_teacher=natural_clean, surrogate=surrogate, surrogate_method=surrogate_method, attack=record_attack(row.attack),
        metric=row.metric, params=tuple(sorted(params.items())),
    )


def _note_surrogate(row: PaperRow) -> str:
    for part in row.note.split(";"):
        words = part.split()
        if len(words) >= 2 and words[0] == "surrogate":
            return words[1]
    return ""


def _default_params(method: str) -> dict[str, tuple[Any, ...]]:
    return {k: (v,) for k, v in ABLATION_DEFAULTS.get(method, {}).items()}


# ---------------------------------------------------------------------------------------------
# Record accessors


def preset_paper(rec: dict[str, Any]) -> str:
    """``adaad`` / ``bmtard`` for a record made under that paper's preset, else ``""``."""
    preset = str(rec.get("preset") or "").lower().replace("\\", "/").rsplit("/", 1)[-1]
    for paper in ("adaad", "bmtard"):
        if preset.startswith(paper + "-"):
            return paper
    return ""


def rec_method(rec: dict[str, Any]) -> str:
    name = str(rec.get("method") or "").lower()
    return METHOD_ALIASES.get(name, name)


def paper_arch(d: dict[str, Any] | None, scale: Any) -> str:
    """The architecture a checkpoint stands for. Mini records must say it (``paper_arch``)."""
    if not isinstance(d, dict):
        return ""
    if d.get("paper_arch"):
        return str(d["paper_arch"])
    return "" if scale in REDUCED_SCALES else str(d.get("arch") or "")


REDUCED_SCALES = ("mini", "small")
SHARED_FLAG = "shared stand-in"  # a cell's flag when a twin architecture's run filled it


def _arch_map(preset: str) -> dict[str, str]:
    """A named preset's stand-in mapping ({} for a preset that cannot be found by name)."""
    return dict(_arch_map_in(preset))


def _arch_map_in(preset: str) -> tuple[tuple[str, str], ...]:
    from advkd.training.config import cached_preset, preset_dirs

    if not preset or not any((d / f"{preset}.yaml").is_file() for d in preset_dirs()):
        return ()
    return tuple(cached_preset(preset).arch_map.items())


def stands_for(d: dict[str, Any] | None, want: str, rec: dict[str, Any], *, share: bool = True) -> bool:
    """Whether checkpoint ``d`` (the record's own, or one of its teachers) stands for ``want``.

    At a reduced scale two paper architectures that the preset maps to one stand-in train the same
    network (``wrn34-10`` and ``wrn34-20`` are both ResNet-14 at mini): a run of either fills both
    (``share``; the plan trains it once and the cell is flagged)."""
    scale = rec.get("scale")
    have = paper_arch(d, scale)
    if have == want:
        return True
    if not share or scale not in REDUCED_SCALES or not isinstance(d, dict) or not d.get("arch"):
        return False
    mapping = _arch_map(str(rec.get("preset") or ""))
    return bool(have) and mapping.get(want) == d["arch"] == mapping.get(have)


def param_value(v: Any) -> Any:
    """A method parameter as recorded (bool, number or fraction text) -> bool, float or text."""
    if isinstance(v, bool):
        return v
    if isinstance(v, (int, float)):
        return float(v)
    text = str(v).strip().lower()
    if text in ("true", "yes", "on"):
        return True
    if text in ("false", "no", "off"):
        return False
    try:
        return float(Fraction(text)) if "/" in text else float(text)
    except (ValueError, ZeroDivisionError):
        return text


def _same(a: Any, b: Any) -> bool:
    a, b = param_value(a), param_value(b)
    if isinstance(a, bool) or isinstance(b, bool):
        return isinstance(a, bool) and isinstance(b, bool) and a == b
    if isinstance(a, float) and isinstance(b, float):
        return math.isclose(a, b, rel_tol=1e-9, abs_tol=1e-9)
    return a == b


def _eps_ok(value: Any) -> bool:
    if value is None or value == "":
        return True
    v = param_value(value)
    return isinstance(v, float) and abs(v - EPS) <= EPS_TOL


def _teacher_method(rec: dict[str, Any], role: str) -> str:
    t = (rec.get("teachers") or {}).get(role) or {}
    return str(t.get("method") or "").lower() if isinstance(t, dict) else ""


def is_knowledge(rec: dict[str, Any]) -> bool:
    return rec.get("kind") == KNOWLEDGE_KIND


def matches(spec: CellSpec, rec: dict[str, Any], *, attack: str | None = None, share: bool = True) -> bool:
    """Whether record ``rec`` fills the cell of ``spec`` (``attack`` overrides the spec's attack;
    ``share=False``: only a run of exactly the cell's architectures, see :func:`stands_for`)."""
    if rec.get("dataset") != spec.dataset or preset_paper(rec) not in ("", spec.paper):
        return False
    scale = rec.get("scale")
    if spec.kind == "knowledge":
        if not is_knowledge(rec) or rec.get("role") != spec.role or rec.get("balance") != spec.balance:
            return False
    else:
        if is_knowledge(rec) or rec.get("attack") != (spec.attack if attack is None else attack):
            return False
        if not _eps_ok(rec.get("train_eps")):
            return False
        linf = str(rec.get("threat_model") or "").lower() == "linf"
        if linf and rec.get("attack") != "clean" and not _eps_ok(rec.get("eps_value", rec.get("eps"))):
            return False
    teachers = rec.get("teachers") or {}
    if spec.kind == "teacher":
        if teachers or not stands_for(rec, spec.arch, rec, share=share):
            return False
        return (rec_method(rec) == "natural") == bool(spec.natural)
    if spec.kind == "student" and (rec_method(rec) != spec.method or not stands_for(rec, spec.arch, rec, share=share)):
        return False
    if spec.kind == "knowledge" and rec_method(rec) != spec.method:
        return False
    for role, arch in spec.teachers:
        if not stands_for(teachers.get(role), arch, rec, share=share):
            return False
    if spec.natural_clean_teacher and _teacher_method(rec, "clean_teacher") not in ("", "natural"):
        return False
    if spec.surrogate and paper_arch(rec.get("surrogate"), scale) != spec.surrogate:
        return False
    if spec.surrogate_method and rec_method(rec.get("surrogate") or {}) not in ("", spec.surrogate_method):
        return False
    params = rec.get("method_params") or {}
    if not isinstance(params, dict):
        params = {}
    if not _eps_ok(params.get("eps")):
        return False
    defaults = ABLATION_DEFAULTS.get(spec.method, {})
    for key, allowed in spec.params:
        value = params.get(key, defaults.get(key))
        if not any(_same(value, a) for a in allowed):
            return False
    return True


def other_params(spec: CellSpec, rec: dict[str, Any]) -> dict[str, Any]:
    """``method_params`` of ``rec`` that the cell does not constrain (shown as a flag)."""
    params = rec.get("method_params") or {}
    if not isinstance(params, dict):
        return {}
    known = {k for k, _ in spec.params} | {"eps"}
    return {k: v for k, v in sorted(params.items()) if k not in known}


def record_time(rec: dict[str, Any]) -> float:
    """Seconds since the epoch of the record's ``time`` (-inf when absent or unreadable)."""
    text = rec.get("time")
    if not text:
        return -math.inf
    for parse in (lambda s: datetime.strptime(s, "%Y-%m-%dT%H:%M:%S%z"), datetime.fromisoformat):
        try:
            t = parse(str(text))
        except ValueError:
            continue
        if t.tzinfo is None:
            t = t.replace(tzinfo=timezone.utc)
        return t.timestamp()
    return -math.inf


def newest(indices: list[int], records: list[dict[str, Any]]) -> int:
    """The newest record: latest ``time``, ties (and missing times) broken by file position."""
    return max(indices, key=lambda i: (record_time(records[i]), i))


def checkpoint_key(rec: dict[str, Any]) -> str:
    return str(rec.get("sha256") or rec.get("checkpoint") or "")


def seed_group(rec: dict[str, Any]) -> str:
    """The run a record's checkpoint came from, without its seed: records of one group differ only
    by ``--seed`` (run names end in ``-s<seed>``; see :func:`advkd.core.runs.default_name`)."""
    run = str(rec.get("run") or "")
    head, sep, tail = run.rpartition("-s")
    return head if sep and tail.isdigit() else run or checkpoint_key(rec)


def _one_value(spec: CellSpec, i: int, records: list[dict[str, Any]], clean_of: dict[str, list[int]]) -> tuple[float | None, list[int]]:
    """(value, source record indices) of one matching record; None when W-Robust has no clean partner."""
    rec = records[i]
    if spec.metric != "w_robust":
        return _float(rec.get("value") if spec.kind == "knowledge" else rec.get("accuracy")), [i]
    r = _float(rec.get("accuracy"))
    if _float(rec.get("clean_accuracy")) is not None:  # scored on a subset: its own clean accuracy on those points
        return (None if r is None else (float(rec["clean_accuracy"]) + r) / 2), [i]
    cleans = clean_of.get(checkpoint_key(rec))
    if not cleans:
        return None, []
    clean = newest(cleans, records)
    c = _float(records[clean].get("accuracy"))
    return (None if c is None or r is None else (c + r) / 2), [clean, i]


def find(spec: CellSpec, records: list[dict[str, Any]]) -> dict[str, Any]:
    """Records for one cell: ``{"ours", "spread", "seeds", "sources", "n_candidates", "flags"}``.

    The newest matching record wins; when other seeds of the same run also match (same run name
    but the ``-s<seed>`` suffix), the cell is the mean over seeds (each seed's newest record) and
    ``spread`` is the sample standard deviation. ``ours`` is None when nothing matched.
    """
    hits = [i for i, r in enumerate(records) if matches(spec, r)]
    clean_of: dict[str, list[int]] = {}
    if spec.metric == "w_robust":
        for i, r in enumerate(records):
            if r.get("attack") == "clean" and not is_knowledge(r) and checkpoint_key(r):
                clean_of.setdefault(checkpoint_key(r), []).append(i)
        if hits and not any(_one_value(spec, i, records, clean_of)[1] for i in hits):
            return {"ours": None, "spread": None, "seeds": 0, "sources": [], "n_candidates": len(hits),
                    "flags": ["no clean record of the attacked checkpoint: W-Robust not computed"]}
        hits = [i for i in hits if _one_value(spec, i, records, clean_of)[1]]
    if not hits:
        return {"ours": None, "spread": None, "seeds": 0, "sources": [], "n_candidates": 0, "flags": []}
    exact = [i for i in hits if matches(spec, records[i], share=False)]
    shared = not exact
    hits = exact or hits  # a run of the cell's own architectures wins over one that shares its stand-in
    group = seed_group(records[newest(hits, records)])
    by_seed: dict[str, list[int]] = {}
    for i in hits:
        if seed_group(records[i]) == group:
            by_seed.setdefault(str(records[i].get("seed", records[i].get("run"))), []).append(i)
    values, sources = [], []
    for seed in sorted(by_seed):
        value, used = _one_value(spec, newest(by_seed[seed], records), records, clean_of)
        if value is not None:
            values.append(value)
            sources += used
    if not values:
        return {"ours": None, "spread": None, "seeds": 0, "sources": [], "n_candidates": len(hits), "flags": []}
    mean = sum(values) / len(values)
    spread = math.sqrt(sum((v - mean) ** 2 for v in values) / (len(values) - 1)) if len(values) > 1 else None
    flags = [f"mean of {len(values)} seeds"] if len(values) > 1 else []
    if shared:
        flags.append(f"{SHARED_FLAG}: run {group}")
    n_candidates = len(hits) - len(by_seed) + 1  # several records of one seed: newest wins
    return {"ours": mean, "spread": spread, "seeds": len(values), "sources": sources, "n_candidates": n_candidates, "flags": flags}


def _float(v: Any) -> float | None:
    try:
        out = float(v)
    except (TypeError, ValueError):
        return None
    return out if math.isfinite(out) else None
