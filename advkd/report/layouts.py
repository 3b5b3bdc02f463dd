"""Table and figure ids, and each table's layout as data.

A layout says how the CSV rows of one table fall into the printed grid: four small functions map a
:class:`~advkd.report.paper.PaperRow` to its row block, row, column group and column (each a
``(key, label)`` pair). Blocks, rows, groups and columns are ordered by first appearance in the
CSV, whose row order is the paper's reading order, so nothing about a table's shape is retyped
here: a layout only names which CSV fields (or which ``note`` settings) span each axis.
"""
from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field

from advkd.core.errors import AdvkdError
from advkd.report.paper import PaperRow

Axis = Callable[[PaperRow], "tuple[str, str]"]

# ---------------------------------------------------------------------------------------------
# Display names as the papers print them.

DATASETS = {"cifar10": "CIFAR-10", "cifar100": "CIFAR-100", "tinyimagenet": "Tiny-ImageNet"}

ARCHS = {
    "resnet18": "ResNet-18", "resnet34": "ResNet-34", "resnet56": "ResNet-56", "mobilenetv2": "MobileNet-v2",
    "preactresnet18": "PreActResNet-18", "preactresnet34": "PreActResNet-34", "vgg16": "VGG-16",
    "wrn34-10": "WRN-34-10", "wrn34-20": "WRN-34-20", "wrn22-6": "WRN-22-6", "wrn70-16": "WRN-70-16",
    "wrn34-10-c": "WRN-34-10-C",
}

METHODS = {
    "natural": "Natural", "pgd-at": "PGD-AT", "trades": "TRADES", "ard": "ARD", "iad": "IAD", "rslad": "RSLAD",
    "akd": "AKD", "adaad": "AdaAD", "adaiad": "AdaIAD", "score": "SCORE", "fair-ard": "Fair-ARD",
    "absld": "ABSLD", "mtard": "MTARD", "bmtard": "B-MTARD", "lmtn": "LMTN", "teacher": "Teacher",
}

ATTACKS = {
    "clean": "Clean", "fgsm": "FGSM", "pgd10": "PGD", "pgd": "PGD", "cw2": "CW", "cw": "CW", "aa": "AA",
    "pgd20-sat": "PGDsat", "pgd20-trades": "PGDtrades", "cwinf": "CW∞", "square": "Square", "rays": "RayS",
    "transfer-fgsm": "FGSM", "transfer-pgd": "PGD", "transfer-jsma": "JSMA",
    "transfer-pgd20-trades": "PGDtrades (transfer)", "transfer-cwinf": "CW∞ (transfer)",
}

METRICS = {"acc": "Acc", "w_robust": "W-Robust", "knowledge_scale": "Knowledge scale"}

# Row-group names in the notes of Tables VII/VIII ("clean acc printed in the PGDsat row group").
ROW_GROUP_ATTACKS = {"PGDsat": "pgd20-sat", "PGDtrades": "pgd20-trades", "CW_inf": "cwinf"}

# Settings in the notes of the ablation tables -> the B-MTARD method_params they stand for.
NOTE_PARAMS = {
    "init_temperature": (("tau_adv_init", "tau_nat_init"), "initial τ = {}"),
    "nlb_exponent": (("nlb_beta",), "β = {}"),
}


def arch_label(arch: str) -> str:
    return ARCHS.get(arch, arch)


def method_label(row: PaperRow) -> str:
    if row.method == "pgd-at" and row.note_has("SAT"):
        return "SAT"
    return METHODS.get(row.method, row.method)


# ---------------------------------------------------------------------------------------------
# Axis functions: PaperRow -> (key, label)


def none(row: PaperRow) -> tuple[str, str]:
    return "", ""


def dataset(row: PaperRow) -> tuple[str, str]:
    return row.dataset, DATASETS.get(row.dataset, row.dataset)


def student(row: PaperRow) -> tuple[str, str]:
    return row.student, arch_label(row.student)


def dataset_student(row: PaperRow) -> tuple[str, str]:
    return f"{row.dataset}/{row.student}", f"{DATASETS.get(row.dataset, row.dataset)} · {arch_label(row.student)}"


def method(row: PaperRow) -> tuple[str, str]:
    return row.method, method_label(row)


def attack(row: PaperRow) -> tuple[str, str]:
    return row.attack, ATTACKS.get(row.attack, row.attack)


def metric(row: PaperRow) -> tuple[str, str]:
    return row.metric, METRICS.get(row.metric, row.metric)


def block_teacher(row: PaperRow) -> tuple[str, str]:
    """AdaAD Tables 2/3: the teacher block (AT rows carry it in the note as ``block teacher X``)."""
    arch = row.teacher or _note_word(row, r"block teacher (\S+?)(?:;|$|\s)")
    return arch, f"Teacher {arch_label(arch)}"


def surrogate(row: PaperRow) -> tuple[str, str]:
    """AdaAD Table 4: the ``teacher`` column holds the transfer surrogate."""
    return row.teacher, f"Surrogate {arch_label(row.teacher)}"


def teacher_arch(row: PaperRow) -> tuple[str, str]:
    return row.teacher, arch_label(row.teacher)


def teacher_type(row: PaperRow) -> tuple[str, str]:
    """B-MTARD Tables I/II: clean or robust teacher and its architecture."""
    if row.clean_teacher:
        return f"clean/{row.clean_teacher}", f"Clean teacher {arch_label(row.clean_teacher)}"
    return f"robust/{row.robust_teacher}", f"Robust teacher {arch_label(row.robust_teacher)}"


def balance(row: PaperRow) -> tuple[str, str]:
    if "(No Balance)" in row.note:
        return "before", "No Balance (τ = 1)"
    if "(After Balance)" in row.note:
        return "after", "After Balance (final τ)"
    raise AdvkdError(f"results.csv row {row.index + 2}: Table I note names no balance condition")


def ablation_group(row: PaperRow) -> tuple[str, str]:
    """Tables VII/VIII: one row group per attack; the clean rows name their group in the note."""
    name = row.attack
    if name == "clean":
        group = _note_word(row, r"printed in the (\S+) row group")
        name = ROW_GROUP_ATTACKS.get(group, group)
    return name, ATTACKS.get(name, name)


def ablation_column(row: PaperRow) -> tuple[str, str]:
    if row.attack == "clean":
        return "clean", "Clean"
    if row.metric == "w_robust":
        return "w_robust", "W-Robust"
    return "robust", "Robust"


def setting(row: PaperRow) -> tuple[str, str]:
    """Tables VII/VIII: the ablated value, parsed from the note (``init_temperature=2``)."""
    for name, value in row.note_params().items():
        if name in NOTE_PARAMS:
            return f"{name}={value}", NOTE_PARAMS[name][1].format(value)
    raise AdvkdError(f"results.csv row {row.index + 2}: ablation note names no setting")


def teacher_pair(row: PaperRow) -> tuple[str, str]:
    return f"{row.clean_teacher}+{row.robust_teacher}", f"{arch_label(row.clean_teacher)} + {arch_label(row.robust_teacher)}"


def _note_word(row: PaperRow, pattern: str) -> str:
    m = re.search(pattern, row.note)
    if not m:
        raise AdvkdError(f"results.csv row {row.index + 2} ({row.table_id}): note {row.note!r} lacks {pattern!r}")
    return m.group(1)


# ---------------------------------------------------------------------------------------------
# Ids


@dataclass(frozen=True)
class TableId:
    """One id of ``advkd report``: ``id`` as users type it, ``csv_id`` as in results.csv."""

    id: str
    csv_id: str
    paper: str  # "adaad" | "bmtard"
    kind: str  # "table" | "figure"
    description: str
    title: str = ""
    block: Axis = none
    row: Axis = none
    group: Axis = none
    column: Axis = none
    hint: str = ""  # how to produce the records that fill it
    notes: tuple[str, ...] = field(default=())

    @property
    def is_figure(self) -> bool:
        return self.kind == "figure"


_AT = "PGD-AT and TRADES rows have no teacher: one record fills them in every teacher block"
_BMT_BASELINES = (
    "Single-teacher baselines (ARD, RSLAD, Fair-ARD, ABSLD) use the B-MTARD robust teacher "
    "(assumed for Fair-ARD and ABSLD, see the CSV notes)"
)

IDS: tuple[TableId, ...] = (
    TableId(
        "table1", "adaad-table1", "adaad", "table",
        "AdaAD Table 1: the robust teachers (WRN-34-10 / WRN-34-20 on CIFAR-10, WRN-34-10 on CIFAR-100) under Clean, PGD, CW, AA",
        "AdaAD Table 1: accuracy (%) of the robust teacher models",
        block=dataset, row=teacher_arch, column=attack,
        hint="advkd attack on pretrain-teacher checkpoints (--suite adaad)",
    ),
    TableId(
        "table2", "adaad-table2", "adaad", "table",
        "AdaAD Table 2: CIFAR-10 white-box robustness of ResNet-18 / MobileNet-v2 students, WRN-34-20 and WRN-34-10 teachers",
        "AdaAD Table 2: white-box robust accuracy (%) on CIFAR-10",
        block=student, row=method, group=block_teacher, column=attack,
        hint="advkd distill --teacher wrn34-20|wrn34-10, then advkd attack --suite adaad", notes=(_AT,),
    ),
    TableId(
        "table3", "adaad-table3", "adaad", "table",
        "AdaAD Table 3: CIFAR-100 white-box robustness of ResNet-18 / MobileNet-v2 students, WRN-34-10 teacher",
        "AdaAD Table 3: white-box robust accuracy (%) on CIFAR-100",
        block=student, row=method, group=block_teacher, column=attack,
        hint="advkd distill --dataset cifar100 --teacher wrn34-10, then advkd attack --suite adaad", notes=(_AT,),
    ),
    TableId(
        "table4", "adaad-table4", "adaad", "table",
        "AdaAD Table 4: CIFAR-10 transfer attacks (FGSM, PGD, JSMA) crafted on PGD-AT ResNet-34 / VGG-16 surrogates, ResNet-18 students",
        "AdaAD Table 4: robust accuracy (%) under transfer attacks on CIFAR-10",
        block=student, row=method, group=surrogate, column=attack,
        hint="advkd transfer-attack --surrogate <PGD-AT resnet34|vgg16 checkpoint> --target <student> --suite adaad-transfer",
        notes=("Column groups are the transfer surrogates; the distillation teacher of these students is not stated "
               "by the paper and is not constrained when matching (UNCONFIRMED)",),
    ),
    TableId(
        "table5", "adaad-table5", "adaad", "table",
        "AdaAD Table 5: self adversarial distillation, robust ResNet-18 teacher -> ResNet-18 student, CIFAR-10",
        "AdaAD Table 5: self adversarial distillation on CIFAR-10 (ResNet-18 teacher and student)",
        block=student, row=method, column=attack,
        hint="advkd distill --student resnet18 --teacher resnet18, then advkd attack --suite adaad",
    ),
    TableId("fig2", "adaad-fig2", "adaad", "figure", "AdaAD Fig. 2: AA accuracy against the inner-maximisation eps (figure)"),
    TableId("fig3", "adaad-fig3", "adaad", "figure", "AdaAD Fig. 3: weight-loss landscapes of PGD-AT and the distilled students (figure)"),
    TableId(
        "bmtard-table1", "bmtard-table1", "bmtard", "table",
        "B-MTARD Table I: knowledge scale (log C - mean entropy) of the clean and robust teachers before and after Entropy-Based Balance",
        "B-MTARD Table I: teachers' knowledge scale on CIFAR-10",
        row=teacher_type, column=balance,
        hint="knowledge-scale records of a B-MTARD run (advkd.report.knowledge_records): teachers at τ = 1 and at the run's final τ",
        notes=("Knowledge scale = log C - mean Shannon entropy (nats) of softmax(logits / τ): the clean teacher on clean "
               "images at τ_nat, the robust teacher on the student's adversarial images at τ_adv (as EBB measures them); "
               "No Balance at τ = 1, After Balance at the final temperatures of the B-MTARD run",),
    ),
    TableId(
        "bmtard-table2", "bmtard-table2", "bmtard", "table",
        "B-MTARD Table II: the clean and robust teachers under white-box attacks on CIFAR-10, CIFAR-100, Tiny-ImageNet",
        "B-MTARD Table II: accuracy (%) of the teachers",
        block=dataset, row=teacher_type, column=attack,
        hint="advkd attack --suite bmtard-white on the natural and robust pretrain-teacher checkpoints",
        notes=("Clean teachers are matched to natural pretrain-teacher checkpoints, robust ones to any adversarially trained one",),
    ),
    TableId(
        "bmtard-table3", "bmtard-table3", "bmtard", "table",
        "B-MTARD Table III: white-box attacks, ResNet-18 students (PreActResNet-18 on Tiny-ImageNet): accuracy and W-Robust",
        "B-MTARD Table III: white-box accuracy and W-Robust (%), ResNet-18 students",
        block=dataset_student, row=method, group=attack, column=metric,
        hint="advkd distill --method bmtard --clean-teacher ... --robust-teacher ..., then advkd attack --suite bmtard-white",
        notes=(_BMT_BASELINES,),
    ),
    TableId(
        "bmtard-table4", "bmtard-table4", "bmtard", "table",
        "B-MTARD Table IV: white-box attacks, MobileNet-v2 students: accuracy and W-Robust",
        "B-MTARD Table IV: white-box accuracy and W-Robust (%), MobileNet-v2 students",
        block=dataset_student, row=method, group=attack, column=metric,
        hint="advkd distill --student mobilenetv2 ..., then advkd attack --suite bmtard-white",
        notes=(_BMT_BASELINES, "B-MTARD MobileNet-v2 on CIFAR-10: runs with initial temperatures 1 or 2 both match "
               "(the paper sets a lost symbol, most likely both initial temperatures, to 2; UNCONFIRMED)"),
    ),
    TableId(
        "bmtard-table5", "bmtard-table5", "bmtard", "table",
        "B-MTARD Table V: black-box attacks (transfer PGDtrades / CW∞ from the robust teacher, Square, RayS), ResNet-18 students",
        "B-MTARD Table V: black-box accuracy and W-Robust (%), ResNet-18 students",
        block=dataset_student, row=method, group=attack, column=metric,
        hint="advkd transfer-attack --surrogate <robust teacher> --suite bmtard-transfer and advkd attack --suite bmtard-black",
        notes=(_BMT_BASELINES, "Transfer columns match records whose surrogate is the robust teacher named in the CSV note"),
    ),
    TableId(
        "bmtard-table6", "bmtard-table6", "bmtard", "table",
        "B-MTARD Table VI: black-box attacks (transfer PGDtrades / CW∞, Square, RayS), MobileNet-v2 students",
        "B-MTARD Table VI: black-box accuracy and W-Robust (%), MobileNet-v2 students",
        block=dataset_student, row=method, group=attack, column=metric,
        hint="advkd transfer-attack --surrogate <robust teacher> --suite bmtard-transfer and advkd attack --suite bmtard-black",
        notes=(_BMT_BASELINES, "Transfer columns match records whose surrogate is the robust teacher named in the CSV note",
               "B-MTARD MobileNet-v2 on CIFAR-10: runs with initial temperatures 1 or 2 both match (UNCONFIRMED)"),
    ),
    TableId(
        "bmtard-table7", "bmtard-table7", "bmtard", "table",
        "B-MTARD Table VII: ablation of the initial teacher temperature (1, 2, 5, 8), ResNet-18 on CIFAR-10",
        "B-MTARD Table VII: initial teacher temperature, ResNet-18 on CIFAR-10 (%)",
        block=ablation_group, row=setting, column=ablation_column,
        hint="advkd distill --method bmtard --set method.tau_adv_init=V --set method.tau_nat_init=V (V = 1, 2, 5, 8)",
        notes=("Rows match method_params tau_adv_init = tau_nat_init = the row's value (a run without them is the τ = 1 row)",),
    ),
    TableId(
        "bmtard-table8", "bmtard-table8", "bmtard", "table",
        "B-MTARD Table VIII: ablation of the Normalization Loss Balance exponent β (0.5, 1, 4, 10), ResNet-18 on CIFAR-10",
        "B-MTARD Table VIII: NLB exponent β, ResNet-18 on CIFAR-10 (%)",
        block=ablation_group, row=setting, column=ablation_column,
        hint="advkd distill --method bmtard --set method.nlb_beta=V (V = 0.5, 1, 4, 10)",
        notes=("Rows match method_params nlb_beta = the row's value (a run without it is the β = 1 row); row labels "
               "were lost in the source and read as 0.5, 1, 4, 10 (see the CSV notes)",),
    ),
    TableId(
        "bmtard-table10", "bmtard-table10", "bmtard", "table",
        "B-MTARD Table X: B-MTARD against LMTN (multi-teacher KD adapted to adversarial training), W-Robust, ResNet-18 on CIFAR-10",
        "B-MTARD Table X: B-MTARD vs LMTN, W-Robust (%), ResNet-18 on CIFAR-10",
        row=method, column=attack,
        hint="advkd distill --method lmtn (and bmtard) with the CIFAR-10 teacher pair, then advkd attack --suite bmtard-white",
    ),
    TableId(
        "bmtard-table11", "bmtard-table11", "bmtard", "table",
        "B-MTARD Table XI: other teacher pairs (WRN-34-10-C clean teacher, WRN-70-16 robust teacher), W-Robust, ResNet-18 on CIFAR-10",
        "B-MTARD Table XI: teacher pairs, W-Robust (%), ResNet-18 on CIFAR-10",
        row=attack, column=teacher_pair,
        hint="advkd distill --method bmtard --clean-teacher <natural wrn34-10> --robust-teacher wrn34-10|wrn70-16",
        notes=("WRN-34-10-C is a naturally trained WRN-34-10: it matches a clean teacher whose paper_arch is wrn34-10 "
               "(and whose training method, when recorded, is natural)",),
    ),
    TableId("bmtard-fig3", "bmtard-fig3", "bmtard", "figure",
            "B-MTARD Fig. 3: ablation of Entropy-Based Balance and Normalization Loss Balance (figure; --set method.ebb / method.nlb)"),
    TableId("bmtard-fig4", "bmtard-fig4", "bmtard", "figure", "B-MTARD Fig. 4: training dynamics of the balanced teachers (figure)"),
    TableId("bmtard-fig5", "bmtard-fig5", "bmtard", "figure", "B-MTARD Fig. 5: training dynamics (figure)"),
    TableId("bmtard-fig6", "bmtard-fig6", "bmtard", "figure", "B-MTARD Fig. 6: training dynamics (figure)"),
)

BY_ID = {t.id: t for t in IDS}

# Header of the block / row label columns, by the axis function that makes them.
AXIS_NAMES: dict[Axis, str] = {
    dataset: "Dataset", student: "Student", dataset_student: "Dataset · student", method: "Method",
    attack: "Attack", teacher_arch: "Teacher", teacher_type: "Teacher", ablation_group: "Attack",
    setting: "Setting", none: "",
}
BY_CSV_ID = {t.csv_id: t for t in IDS}

TABLE9_MESSAGE = (
    "Table IX (gradient-estimation attack) is missing from our source of the B-MTARD paper, so it cannot be "
    "reproduced: the transcription has Tables I-VIII, X and XI (see advkd/paper_tables/README.md); "
    "run 'advkd report list' for the ids"
)

_ROMAN = {"i": 1, "ii": 2, "iii": 3, "iv": 4, "v": 5, "vi": 6, "vii": 7, "viii": 8, "ix": 9, "x": 10, "xi": 11}


def lookup(name: str) -> TableId:
    """The :class:`TableId` for a user-typed name (see :func:`canonical_id`)."""
    raw = str(name).strip()
    key = raw.lower().replace("_", "-").replace(" ", "")
    key = re.sub(r"^(bmtard|b-mtard|adaad)-?", lambda m: ("bmtard" if "m" in m.group(1) else "adaad") + "-", key)
    m = re.fullmatch(r"(adaad-|bmtard-)?(table|fig)-?([0-9]+|[ivx]+)", key)
    if m:
        prefix, kind, num = m.group(1) or "", m.group(2), m.group(3)
        num = str(_ROMAN[num]) if num in _ROMAN else num
        if prefix == "bmtard-" and kind == "table" and num == "9":
            raise AdvkdError(TABLE9_MESSAGE)
        key = f"{prefix}{kind}{num}"
        if prefix == "adaad-":
            key = key[len("adaad-"):]
    if key in BY_ID:
        return BY_ID[key]
    if key in BY_CSV_ID:
        return BY_CSV_ID[key]
    raise AdvkdError(f"unknown table or figure id {raw!r}; choose one of: {', '.join(t.id for t in IDS)} (advkd report list describes them)")


def canonical_id(name: str) -> str:
    """``"table2"`` -> ``"adaad-table2"`` (the results.csv id); ``"bmtard-table3"`` stays.

    Case, ``_``/space and Roman numerals are accepted (``bmtard-table-III``). ``bmtard-table9`` and
    unknown names raise :class:`AdvkdError` with a one-line explanation.
    """
    return lookup(name).csv_id


def list_ids() -> list[tuple[str, str]]:
    """``(id, one-line description)`` for every table and figure, in the papers' order."""
    return [(t.id, t.description) for t in IDS]
