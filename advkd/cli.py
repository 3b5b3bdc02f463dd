"""The ``advkd`` command line: parse, validate, call the engine. No math here.

Every user mistake surfaces as :class:`AdvkdError` (or a usage error) and ends as one line on
stderr with exit code 2 — see :func:`main`.
"""
from __future__ import annotations

import inspect
import signal
import sys
import threading
from collections.abc import Callable
from dataclasses import dataclass
from enum import Enum
from pathlib import Path
from typing import Annotated, Any, Optional

import typer
import typer.core

from advkd.argv import check_text, hoist_root_options, interrupted_line, one_line, plain_help_when_narrow, preempted_line
from advkd.core import jsonsafe
from advkd.core.distributed import is_main, teardown
from advkd.core.errors import AdvkdError, Interrupted
from advkd.core.preempt import EXIT_PREEMPTED, Preempted, stop_now_signals
from advkd.core.progress import Reporter, warn
from advkd.core.version import __version__
from advkd.data.loaders import DATASETS
from advkd.evaluation.suites import DEFAULT_N_EXAMPLES
from advkd.methods import METHODS, list_methods
from advkd.training.config import SELECT_METRICS, TrainConfig, default_preset, list_presets, resolve_config

try:  # typer >= 0.20 vendors click
    from typer._click import exceptions as click_exceptions
except ImportError:  # pragma: no cover - older typer with external click
    from click import exceptions as click_exceptions

app = typer.Typer(
    name="advkd",
    help="Adversarial robustness distillation: pretrain teachers, distill students, attack them.",
    no_args_is_help=True,
    add_completion=True,  # advkd --install-completion bash|zsh|fish|powershell
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)

OutputFormat = Enum("OutputFormat", {"rich": "rich", "json": "json"}, type=str)  # type: ignore[misc]
Select = Enum("Select", {n: n for n in SELECT_METRICS}, type=str)  # type: ignore[misc]


@dataclass
class Globals:
    data_dir: str = "./data"
    runs_dir: str = "./runs"
    device: str = "auto"
    seed: int = 0


# ----------------------------------------------------------------------------- shared options

DataDirOpt = Annotated[Optional[str], typer.Option("--data-dir", help="Folder holding the datasets (env ADVKD_DATA_DIR; default ./data).", show_default=False)]
RunsDirOpt = Annotated[Optional[str], typer.Option("--runs-dir", help="Folder for runs, teachers and results.jsonl (env ADVKD_RUNS_DIR; default ./runs).", show_default=False)]
DeviceOpt = Annotated[Optional[str], typer.Option("--device", help="auto | cpu | cuda | cuda:N (default auto).", show_default=False)]
SeedOpt = Annotated[Optional[int], typer.Option("--seed", help="Random seed (default 0).", show_default=False)]
PresetOpt = Annotated[Optional[str], typer.Option("--preset", help=f"Preset name ({', '.join(list_presets())}) or path to a YAML file; distill on the papers' datasets defaults to the recipe of the method's paper (adaad-paper or bmtard-paper).")]
EpochsOpt = Annotated[Optional[int], typer.Option("--epochs", help="Number of epochs (overrides the preset).")]
BatchOpt = Annotated[Optional[int], typer.Option("--batch-size", help="Training batch size (overrides the preset).")]
LrOpt = Annotated[Optional[float], typer.Option("--lr", help="Initial learning rate (overrides the preset).")]
SubsetOpt = Annotated[Optional[int], typer.Option("--train-subset", help="Train on the first N training images only.")]
NExamplesOpt = Annotated[Optional[int], typer.Option("--n-examples", "--n", help="Per-epoch evaluation on the first N test images.")]
SetOpt = Annotated[Optional[list[str]], typer.Option("--set", help="Override any setting: key=value (lr=0.05, milestones=[2,3]) or method.KEY=VALUE (method.beta=6). Repeatable.")]
NameOpt = Annotated[Optional[str], typer.Option("--name", help="Run name (default: ARCH-METHOD, the teacher archs, the preset, sSEED, joined by dashes).")]
ResumeOpt = Annotated[bool, typer.Option("--resume", help="Continue the run with this name exactly where it stopped (no-op if complete).")]
SaveEveryOpt = Annotated[Optional[int], typer.Option("--save-every", help="Also keep epoch-NNN.safetensors every N epochs.")]
SelectOpt = Annotated[Optional[Select], typer.Option("--select", help="Metric that picks best.safetensors.")]
DownloadOpt = Annotated[bool, typer.Option("--download", help="Download the dataset into --data-dir if it is missing (needs network).")]
AttackSetOpt = Annotated[Optional[list[str]], typer.Option("--set", help="Attack parameter: ATTACK.PARAM=VALUE (aa.version=plus, square.n_queries=1000, cwinf.step_size=2/255). Repeatable.")]
DatasetOpt = Annotated[str, typer.Option("--dataset", metavar="<" + "|".join(DATASETS.names()) + "|PLUGIN>", help="Dataset: a built-in one, or an installed plugin's (advkd.datasets entry point).")]
# speed switches (advkd.core.accel): None = the device's default
AmpOpt = Annotated[Optional[bool], typer.Option("--amp/--no-amp", help="bf16 autocast of the training forwards (default: measured, see --paths; the run's first lines say which ran and why).", show_default=False)]
EvalAmpOpt = Annotated[Optional[bool], typer.Option("--amp/--no-amp", help="bf16 autocast of the attacked model (default off: fp32; each record names its precision).", show_default=False)]
ChannelsLastOpt = Annotated[Optional[bool], typer.Option("--channels-last/--no-channels-last", help="Channels-last memory format (training default: measured, see --paths; attacks: on for CUDA and for AVX2/AVX-512 CPUs).", show_default=False)]


class PathsMode(str, Enum):
    auto = "auto"
    measure = "measure"
    exact = "exact"


PathsOpt = Annotated[Optional[PathsMode], typer.Option("--paths", envvar="ADVKD_PATHS", show_default=False, help="How unset --amp / --channels-last are decided: auto (default: the cached choice for this machine and these networks, measured on first use in a few seconds), measure (measure again, replace the cached choice) or exact (fp32 NCHW, no measurement). advkd speed shows the cache.")]
CompileOpt = Annotated[Optional[bool], typer.Option("--compile/--no-compile", help="torch.compile the student and teachers (default: on for CUDA, off for CPU, where it does not pay back within a mini run).", show_default=False)]
DataOnDeviceOpt = Annotated[Optional[bool], typer.Option("--data-on-device/--data-on-host", help="Keep the uint8 training set on the device and augment there (default), or on the host with pinned async copies.", show_default=False)]
FoldBnOpt = Annotated[Optional[bool], typer.Option("--fold-bn/--no-fold-bn", help="Evaluate a copy of the model with eval-mode BatchNorm folded into the preceding convolutions (default on: same function, fewer passes).", show_default=False)]
FreezeOpt = Annotated[Optional[bool], typer.Option("--freeze/--no-freeze", help="Answer the folded copy's no-grad forwards (score-based attacks, clean passes) with a frozen TorchScript copy (default: on for CPU, off for CUDA; gradients always come from the eager copy).", show_default=False)]


def _print_version(value: bool) -> None:
    if value:
        typer.echo(f"advkd {__version__}")
        raise typer.Exit(0)


@app.callback()
def root(
    ctx: typer.Context,
    data_dir: Annotated[str, typer.Option("--data-dir", envvar="ADVKD_DATA_DIR", help="Folder holding the datasets.")] = "./data",
    runs_dir: Annotated[str, typer.Option("--runs-dir", envvar="ADVKD_RUNS_DIR", help="Folder for runs, teachers and results.jsonl.")] = "./runs",
    device: Annotated[str, typer.Option("--device", help="auto | cpu | cuda | cuda:N.")] = "auto",
    seed: Annotated[int, typer.Option("--seed", help="Random seed.")] = 0,
    threads: Annotated[Optional[int], typer.Option("--threads", envvar="ADVKD_THREADS", help="torch's CPU threads (default: one per core); split the cores between processes that run at once.")] = None,
    version: Annotated[bool, typer.Option("--version", help="Print the version and exit.", is_eager=True, callback=_print_version)] = False,
) -> None:
    """Global options may be given here or on any subcommand (the subcommand wins)."""
    from advkd.core.accel import set_threads

    set_threads(threads)
    ctx.obj = Globals(data_dir=data_dir, runs_dir=runs_dir, device=device, seed=seed)


def _globals(ctx: typer.Context, **given: Any) -> Globals:
    base: Globals = ctx.obj or Globals()
    return Globals(**{k: (given[k] if given.get(k) is not None else getattr(base, k)) for k in Globals.__dataclass_fields__})


def _method_help(teacher_free: bool | None) -> str:
    lines = []
    for name in list_methods(teacher_free=teacher_free):
        entry = METHODS.entry(name)
        roles = ", ".join(entry.obj.roles) or "no teacher"
        lines.append(f"{name} ({roles}): {entry.help}")
    return "\n\n".join(lines + ["Methods from installed plugins: advkd methods (docs/plugins.md)."])


# ----------------------------------------------------------------------------- training commands


def with_options(template: Callable[..., None]) -> Callable[[Callable[..., None]], Callable[..., None]]:
    """Give a command the keyword options of ``template`` (collected in its ``**opts``).

    Typer reads a command's options from its signature, so commands that share a block of
    options share it through one template function instead of repeating the declarations.
    """
    shared = list(inspect.signature(template, eval_str=True).parameters.values())

    def decorate(command: Callable[..., None]) -> Callable[..., None]:
        own = [p for p in inspect.signature(command, eval_str=True).parameters.values() if p.kind is not p.VAR_KEYWORD]
        command.__signature__ = inspect.Signature(own + shared)  # type: ignore[attr-defined]
        return command

    return decorate


def _training_options(
    dataset: DatasetOpt = "cifar10",
    preset: PresetOpt = None,
    epochs: EpochsOpt = None,
    batch_size: BatchOpt = None,
    lr: LrOpt = None,
    train_subset: SubsetOpt = None,
    n_examples: NExamplesOpt = None,
    set_items: SetOpt = None,
    name: NameOpt = None,
    resume: ResumeOpt = False,
    save_every: SaveEveryOpt = None,
    checkpoint_every: Annotated[Optional[str], typer.Option("--checkpoint-every", metavar="DURATION", help="Also save a mid-epoch resume state every DURATION of training (10m, 90s, 1h; off by default, 10m in the paper presets). SIGTERM/SIGUSR1 always save one and stop (exit 75).")] = None,
    select: SelectOpt = None,
    download: DownloadOpt = False,
    print_config: Annotated[bool, typer.Option("--print-config", help="Print the fully resolved config (as the run's config.yaml would hold it) and the run dir, then exit without training or writing anything.")] = False,
    log_to: Annotated[Optional[list[str]], typer.Option("--log", help="Also send each epoch's metrics to tensorboard (<run>/tensorboard) or wandb (optional packages). Repeatable.")] = None,
    amp: AmpOpt = None,
    channels_last: ChannelsLastOpt = None,
    paths: PathsOpt = None,
    compile_models: CompileOpt = None,
    data_on_device: DataOnDeviceOpt = None,
    data_dir: DataDirOpt = None,
    runs_dir: RunsDirOpt = None,
    device: DeviceOpt = None,
    seed: SeedOpt = None,
) -> None:
    """The options of ``pretrain-teacher`` and ``distill`` (template for :func:`with_options`)."""


def _train(kind: str, ctx: typer.Context, opts: dict[str, Any], **command_flags: Any) -> None:
    """Resolve the config and the speed switches, train, and print the best checkpoint."""
    from advkd.core.accel import resolve_fast_paths
    from advkd.core.distributed import pick_device, setup
    from advkd.training.loop import run

    g = _globals(ctx, **opts)
    flags = {
        **command_flags,
        **{k: opts[k] for k in ("dataset", "epochs", "batch_size", "lr", "train_subset", "name", "save_every", "checkpoint_every", "select")},
        "eval_examples": opts["n_examples"],
        "seed": g.seed,
    }
    flags = {k: (v.value if isinstance(v, Enum) else v) for k, v in flags.items()}
    preset = opts["preset"]
    if preset is None and kind == "distill":  # the run header names it; errors name it ("at preset adaad-paper")
        preset = default_preset(flags["method"], flags["dataset"])
    cfg = resolve_config(TrainConfig(kind=kind), preset=preset, set_items=opts["set_items"], flags=flags)
    if opts["print_config"]:  # before the device: no torchrun group, no data, nothing written
        from advkd.training.dry_run import dry_run

        typer.echo(dry_run(cfg, runs_dir=g.runs_dir, data_dir=g.data_dir).text(), nl=False)
        return
    device = setup(pick_device(g.device))  # joins the torchrun group when launched by torchrun
    _warn_if_busy(device)
    fast = resolve_fast_paths(
        device, amp=opts["amp"], channels_last=opts["channels_last"], compile=opts["compile_models"], data_on_device=opts["data_on_device"],
        paths=opts["paths"].value if opts["paths"] is not None else None,
    )
    summary = run(cfg, runs_dir=g.runs_dir, data_dir=g.data_dir, device=device, resume=opts["resume"], download=opts["download"],
                  reporter=Reporter(), fast=fast, log_to=opts["log_to"])
    if not is_main():
        return
    if summary.already_complete:
        typer.echo(f"{summary.path} is already complete; nothing to do")
    best = summary.best_metrics
    shown = ", ".join(f"{k} {best[k]:.2f}%" for k in ("clean_acc", "robust_acc", "w_robust") if k in best)
    typer.echo(f"best checkpoint: {summary.path / 'best.safetensors'} (epoch {summary.best_epoch}{': ' + shown if shown else ''})")


@app.command(
    "pretrain-teacher",
    help="Train a teacher (or a teacher-free baseline) from scratch. The methods are listed after the options.",
    short_help="Train a teacher (or a teacher-free baseline) from scratch.",
    epilog="Methods:\n\n" + _method_help(teacher_free=True),
)
@with_options(_training_options)
def pretrain_teacher(
    ctx: typer.Context,
    arch: Annotated[str, typer.Option("--arch", help="Architecture (resnet18, wrn34-10, rn56, ...).")],
    method: Annotated[str, typer.Option("--method", help="Teacher-free method: " + ", ".join(list_methods(teacher_free=True)) + ".")] = "trades",
    **opts: Any,
) -> None:
    _train("pretrain-teacher", ctx, opts, method=method, arch=arch)


@app.command(
    help="Distill a student from one or two teachers (or train a teacher-free baseline student). The methods are listed after the options.",
    short_help="Distill a student from one or two teachers (or train a teacher-free baseline student).",
    epilog="Methods:\n\n" + _method_help(None),
)
@with_options(_training_options)
def distill(
    ctx: typer.Context,
    method: Annotated[str, typer.Option("--method", help="Method: " + ", ".join(list_methods()) + ".")],
    student: Annotated[str, typer.Option("--student", help="Student architecture (resnet18, mobilenetv2, ...); the papers' main student by default.")] = "resnet18",
    teacher: Annotated[Optional[str], typer.Option("--teacher", help="Teacher of single-teacher methods: checkpoint path, ARCH (teacher store), ARCH:weights.pt or robustbench:ID.")] = None,
    clean_teacher: Annotated[Optional[str], typer.Option("--clean-teacher", help="Clean teacher of two-teacher methods (same forms as --teacher).")] = None,
    robust_teacher: Annotated[Optional[str], typer.Option("--robust-teacher", help="Robust teacher of two-teacher methods (same forms as --teacher).")] = None,
    **opts: Any,
) -> None:
    teachers = {r: s for r, s in (("teacher", teacher), ("clean_teacher", clean_teacher), ("robust_teacher", robust_teacher)) if s}
    _train("distill", ctx, opts, method=method, arch=student, teachers=teachers)


# ----------------------------------------------------------------------------- attack


def _attack_help() -> str:
    from advkd.attacks import ATTACKS
    from advkd.evaluation.suites import SUITES

    attacks = "\n\n".join(f"{e.name}: {e.help}" for e in ATTACKS)
    suites = "\n\n".join(f"{e.name}: {', '.join(e.obj)} ({e.help})" for e in SUITES)
    return f"Attacks:\n\n{attacks}\n\nSuites:\n\n{suites}"


def _evaluation_options(
    n_examples: Annotated[int, typer.Option("--n-examples", "--n", help="Attack the first N test images (0 = all).")] = DEFAULT_N_EXAMPLES,
    attack_examples: Annotated[Optional[list[str]], typer.Option("--attack-examples", metavar="ATTACK=N", help="Score this attack on the first N of those images only, e.g. aa=100 (slow attacks). Repeatable.")] = None,
    model_dataset: Annotated[Optional[str], typer.Option("--dataset", help="Dataset of an ARCH:weights.pt or robustbench:ID model (default cifar10; an advkd checkpoint says its own).")] = None,
    threat_model: Annotated[str, typer.Option("--threat-model", help="RobustBench threat model of a robustbench:ID model: Linf, L2 or corruptions.")] = "Linf",
    batch_size: Annotated[int, typer.Option("--batch-size", help="Evaluation batch size.")] = 256,
    eps: Annotated[str, typer.Option("--eps", help="Perturbation budget, exact fractions allowed.")] = "8/255",
    output: Annotated[OutputFormat, typer.Option("--format", help="Output format on stdout.")] = OutputFormat("rich"),
    set_items: AttackSetOpt = None,
    amp: EvalAmpOpt = None,
    channels_last: ChannelsLastOpt = None,
    fold_bn: FoldBnOpt = None,
    freeze: FreezeOpt = None,
    data_dir: DataDirOpt = None,
    runs_dir: RunsDirOpt = None,
    device: DeviceOpt = None,
    seed: SeedOpt = None,
) -> None:
    """The options of ``attack`` and ``transfer-attack`` (template for :func:`with_options`)."""


def _cuda() -> bool:
    import torch

    return torch.cuda.is_available()


def _warn_if_busy(device: Any = None) -> None:
    """One warning line before CPU work on a machine that is already busy (rank 0, CPU only)."""
    from advkd.core.accel import busy_machine_warning

    if is_main() and (device is None or getattr(device, "type", "cpu") == "cpu"):
        line = busy_machine_warning()
        if line:
            warn(line)


def _evaluate(ctx: typer.Context, checkpoint: Path | None, opts: dict[str, Any], **command_args: Any) -> None:
    """Run the attacks, append the records, print the table (rank 0)."""
    from advkd.evaluation.driver import run_attack

    g = _globals(ctx, **opts)
    if g.device == "cpu" or g.device == "auto" and not _cuda():
        _warn_if_busy()
    report = run_attack(
        checkpoint, n_examples=opts["n_examples"], batch_size=opts["batch_size"], eps=opts["eps"], data_dir=g.data_dir,
        runs_dir=g.runs_dir, device=g.device, seed=g.seed, reporter=Reporter(), set_items=opts["set_items"], attack_examples=opts["attack_examples"],
        dataset=opts["model_dataset"], threat_model=opts["threat_model"],
        fast_flags={k: opts[k] for k in ("amp", "channels_last", "fold_bn", "freeze")}, **command_args,
    )
    if not is_main():
        return
    if opts["output"].value == "json":
        typer.echo(jsonsafe.dumps(report.as_json(), indent=2, sort_keys=True))
    else:
        report.print_table()


@app.command(
    help="Robust accuracy of a checkpoint under attacks; appends one record per attack to <runs-dir>/results.jsonl. "
    "The attacks and the suites are listed after the options.",
    short_help="Robust accuracy of a checkpoint under attacks, one record per attack in results.jsonl.",
    epilog=_attack_help(),
)
@with_options(_evaluation_options)
def attack(
    ctx: typer.Context,
    checkpoint: Annotated[Optional[Path], typer.Argument(help="Model: an advkd checkpoint (.safetensors), ARCH:weights.pt or robustbench:ID; default: the best checkpoint of the newest run.", show_default=False)] = None,
    suite: Annotated[Optional[str], typer.Option("--suite", help="Attack suite (listed below the options).")] = None,
    attacks: Annotated[Optional[str], typer.Option("--attacks", help="Comma-separated attack ids (listed below the options), e.g. clean,fgsm,pgd10.")] = None,
    **opts: Any,
) -> None:
    _evaluate(ctx, checkpoint, opts, suite=suite, attacks=attacks)


@app.command(
    "transfer-attack",
    help="Craft adversarial examples on a surrogate checkpoint and measure a target checkpoint's accuracy on them "
    "(AdaAD Table 4; B-MTARD Tables V/VI). Records name both checkpoints; attack ids get a 'transfer-' prefix.",
    short_help="Accuracy of a target checkpoint on adversarial examples crafted on a surrogate checkpoint.",
)
@with_options(_evaluation_options)
def transfer_attack(
    ctx: typer.Context,
    surrogate: Annotated[Path, typer.Option("--surrogate", help="Model the examples are crafted on (checkpoint, ARCH:weights.pt or robustbench:ID).")],
    target: Annotated[Path, typer.Option("--target", help="Model whose accuracy is measured (same forms).")],
    suite: Annotated[Optional[str], typer.Option("--suite", help="Attack suite: transfer (default), adaad-transfer, bmtard-transfer.")] = None,
    attacks: Annotated[Optional[str], typer.Option("--attacks", help="Comma-separated attack ids (listed in advkd attack --help), e.g. fgsm,pgd10,jsma.")] = None,
    **opts: Any,
) -> None:
    _evaluate(ctx, target, opts, suite=suite, attacks=attacks, surrogate=surrogate)


# ----------------------------------------------------------------------------- landscape

def _figure_sizes() -> list[str]:
    from advkd.report.figures.style import size_names

    return size_names()


FigureSize = Enum("FigureSize", {n: n for n in _figure_sizes()}, type=str)  # type: ignore[misc]
SizeOpt = Annotated[Optional[FigureSize], typer.Option("--size", help="Figure width as printed: column (3.5 in, one column of an IEEE/CVPR page; the default) or page (7.16 in); text is 8-9 pt at that size.", show_default=False)]
TitleOpt = Annotated[Optional[str], typer.Option("--title", help="Figure title instead of the default ('' for none: the caption says it).", show_default=False)]
LabelOpt = Annotated[Optional[list[str]], typer.Option("--label", help="Legend label of one curve: CURVE=TEXT, CURVE its position in the legend (1, 2, ...) or its id (the figure's JSON). Repeatable.", show_default=False)]


def _figure_options(size: Optional[Enum], title: Optional[str], labels: Optional[list[str]]):
    """The figure options the user gave (None when none): checked before any work."""
    from advkd.report.figures.style import FigureOptions

    if size is None and title is None and not labels:
        return None
    return FigureOptions(size=size.value if size is not None else "column", title=title, labels=tuple(labels or ()))


@app.command(help="Weight-loss landscape (AdaAD Figure 3): adversarial loss along filter-normalised random directions "
             "in weight space, adversarial examples regenerated on every perturbed model. Writes a PNG and its data as JSON.",
             short_help="Weight-loss landscape of checkpoints (AdaAD Figure 3), as a PNG and its data as JSON.")
def landscape(
    ctx: typer.Context,
    checkpoints: Annotated[list[Path], typer.Argument(help="One or more models (same dataset): advkd checkpoints, ARCH:weights.pt or robustbench:ID.")],
    directions: Annotated[int, typer.Option("--directions", help="Random directions per checkpoint.")] = 10,
    points: Annotated[int, typer.Option("--points", help="Grid points along each direction (odd: alpha 0 is on the grid).")] = 21,
    radius: Annotated[float, typer.Option("--radius", help="Grid from -radius to +radius, in units of the filter-normalised directions (the paper does not state its range).")] = 1.0,
    n_examples: Annotated[int, typer.Option("--n-examples", "--n", help="First N test images.")] = 1000,
    attack_id: Annotated[str, typer.Option("--attack", help="Attack regenerated on each perturbed model ('clean' for the plain loss).")] = "pgd10",
    eps: Annotated[str, typer.Option("--eps", help="Attack budget.")] = "8/255",
    batch_size: Annotated[int, typer.Option("--batch-size", help="Evaluation batch size.")] = 256,
    bn_bias: Annotated[str, typer.Option("--bn-bias", help="1-D parameters (BN, biases) in the direction: zero or copy.")] = "zero",
    out: Annotated[Optional[Path], typer.Option("--out", help="Figure path: .png, or vector .pdf / .svg (default <runs-dir>/landscape/landscape.png, where report fig3 looks).")] = None,
    model_dataset: Annotated[Optional[str], typer.Option("--dataset", help="Dataset of ARCH:weights.pt / robustbench:ID models (default cifar10).")] = None,
    size: SizeOpt = None,
    title: TitleOpt = None,
    label: LabelOpt = None,
    data_dir: DataDirOpt = None,
    runs_dir: RunsDirOpt = None,
    device: DeviceOpt = None,
    seed: SeedOpt = None,
) -> None:
    from advkd.core.distributed import pick_device
    from advkd.core.oserrors import check_writable
    from advkd.report.figures.weight_loss import plot_landscape, summary_table
    from advkd.report.landscape import landscape as run_landscape

    g = _globals(ctx, data_dir=data_dir, runs_dir=runs_dir, device=device, seed=seed)
    if bn_bias not in ("zero", "copy"):
        raise AdvkdError(f"--bn-bias must be zero or copy, got {bn_bias!r}")
    if out is None:  # the default lies in the runs dir: refused if a link there leads elsewhere
        from advkd.core.runs import check_inside

        out = check_inside(Path(g.runs_dir) / "landscape" / "landscape.png", g.runs_dir, what="landscape output")
    if out.is_dir() or out.suffix.lower() not in (".png", ".pdf", ".svg"):
        raise AdvkdError(f"--out {out} must be a .png, .pdf or .svg file path (its data is written beside it as .json)")
    check_writable(out.parent, what="--out folder")  # before minutes of work, not at the end
    figure = _figure_options(size, title, label)
    if figure is not None:  # a --label naming no checkpoint fails now, not after the landscape
        from advkd.report.figures.style import resolve_labels
        from advkd.report.figures.weight_loss import curve_ids

        resolve_labels(curve_ids(checkpoints), figure.labels)
    results = run_landscape(
        checkpoints, data_dir=g.data_dir, n_examples=n_examples, directions=directions, points=points, radius=radius,
        attack=attack_id, eps=eps, batch_size=batch_size, device=pick_device(g.device), seed=g.seed, bn_bias=bn_bias, reporter=Reporter(),
        dataset=model_dataset,
    )
    plot_landscape(results, out, options=figure)
    from advkd.core.console import print_wide

    print_wide(summary_table(results, out))  # piped: the figure path in its title stays whole


# ----------------------------------------------------------------------------- report


ReportFormat = Enum("ReportFormat", {f: f for f in ("rich", "markdown", "csv", "json", "latex", "png", "pdf", "svg", "sh", "slurm")}, type=str)  # type: ignore[misc]


def _report_help() -> str:
    from advkd.report import list_ids

    return "\n\n".join(f"{i}: {d}" for i, d in list_ids())


@app.command(
    help="The papers' tables and figures with our numbers beside the published ones (ID: a table or figure, or 'list'). "
    "The IDs are listed after the options.",
    short_help="The papers' tables and figures with our numbers beside the published ones (ID: a table or figure, or 'list').",
    epilog="IDs:\n\n" + _report_help(),
)
def report(
    ctx: typer.Context,
    table_id: Annotated[str, typer.Argument(metavar="ID", help="Table or figure id (listed below the options), or 'list'.")],
    output: Annotated[ReportFormat, typer.Option("--format", help="Output format (png, pdf, svg: figures only, a figure's format is its --out suffix; with --plan: sh, the default, or slurm).")] = ReportFormat("rich"),
    out: Annotated[Optional[Path], typer.Option("--out", help="Write to this file instead of stdout (needed for figures: FILE.png, .pdf or .svg).")] = None,
    run: Annotated[Optional[Path], typer.Option("--run", help="Run dir for the training-dynamics figures (default: the newest bmtard run).")] = None,
    plan: Annotated[bool, typer.Option("--plan", help="Print the commands that would fill the table's empty cells, in dependency order.")] = False,
    preset: Annotated[str, typer.Option("--preset", help="Scale of the plan: mini, paper, or a preset name / YAML path.")] = "mini",
    only: Annotated[Optional[list[str]], typer.Option("--only", help="Plan only these cells: COLUMN=VALUE (student=resnet18, teacher=wrn34-10, dataset=cifar10, method=adaad). Repeatable.")] = None,
    n_examples: Annotated[Optional[int], typer.Option("--n-examples", help="Plan: attack the first N test images (default: each command's default, 1000).")] = None,
    ranking: Annotated[bool, typer.Option("--ranking", help="Add how well our order of methods agrees with the paper's, per column (Kendall's tau, flipped pairs).")] = False,
    with_methods: Annotated[Optional[list[str]], typer.Option("--with", metavar="METHOD", help="Add a row for a method the paper does not have (a built-in, an installed plugin's name or module:Class): our numbers only, marked, under the protocol of the row with the same teachers; with --plan, the commands that train and attack it. Repeatable.")] = None,
    estimate: Annotated[bool, typer.Option("--estimate/--no-estimate", help="Plan: price each command on this device (a short calibration of each network, cached under the runs dir).")] = True,
    size: SizeOpt = None,
    title: TitleOpt = None,
    label: LabelOpt = None,
    runs_dir: RunsDirOpt = None,
    data_dir: DataDirOpt = None,
) -> None:
    from advkd.report.driver import run_report

    g = _globals(ctx, runs_dir=runs_dir, data_dir=data_dir)
    text = run_report(
        table_id, fmt=output.value, out=out, runs_dir=Path(g.runs_dir), run=run, plan=plan, preset=preset, only=only, n_examples=n_examples,
        data_dir=g.data_dir, ranking=ranking, estimate=estimate, figure=_figure_options(size, title, label), device=g.device,
        with_methods=with_methods,
    )
    if text is not None:
        typer.echo(text)


@app.command(help="The result records of the runs dir as a flat table, one row per checkpoint x attack (the newest record); "
             "--format csv loads in pandas. Filters are glob patterns.",
             short_help="The result records of the runs dir as a flat table, one row per checkpoint x attack.")
def results(
    ctx: typer.Context,
    checkpoint: Annotated[Optional[str], typer.Option("--checkpoint", help="Checkpoint path pattern, e.g. '*rslad*'.")] = None,
    run: Annotated[Optional[str], typer.Option("--run", help="Run name pattern, e.g. 'resnet18-*-small-s*'.")] = None,
    method: Annotated[Optional[str], typer.Option("--method", help="Method pattern.")] = None,
    attack: Annotated[Optional[str], typer.Option("--attack", help="Attack id pattern, e.g. 'pgd*'.")] = None,
    scale: Annotated[Optional[str], typer.Option("--scale", help="paper, mini, small or custom.")] = None,
    dataset: Annotated[Optional[str], typer.Option("--dataset", help="Dataset pattern.")] = None,
    output: Annotated[str, typer.Option("--format", help="rich, csv, json or markdown.")] = "rich",
    out: Annotated[Optional[Path], typer.Option("--out", help="Write to this file instead of stdout.")] = None,
    repair: Annotated[bool, typer.Option("--repair", help="Move every line of results.jsonl that is not a valid record to "
                                         "results.jsonl.bad (the original kept as results.jsonl.before-repair), then show the rest.")] = False,
    runs_dir: RunsDirOpt = None,
) -> None:
    from advkd.core.console import print_wide
    from advkd.core.files import atomic_write_text
    from advkd.report.results import render_results, repair_results, result_rows

    g = _globals(ctx, runs_dir=runs_dir)
    if repair:
        typer.echo(repair_results(g.runs_dir), err=True)
    given = {"checkpoint": checkpoint, "run": run, "method": method, "attack": attack, "scale": scale, "dataset": dataset}
    rendered = render_results(result_rows(g.runs_dir, {k: v for k, v in given.items() if v is not None}), output)
    if out is not None:
        if not isinstance(rendered, str):
            raise AdvkdError("--out needs --format csv, json or markdown")
        atomic_write_text(out, rendered)
    elif isinstance(rendered, str):
        typer.echo(rendered, nl=False)
    else:
        print_wide(rendered)


# ----------------------------------------------------------------------------- methods and attacks


ListFormat = Enum("ListFormat", {"rich": "rich", "json": "json"}, type=str)  # type: ignore[misc]


def _print_registry(registry: Any, output: Any, *, kind: str, about: str, describe: Any) -> None:
    from advkd.core.console import print_wide
    from advkd.core.listing import registry_rows, registry_table

    rows = registry_rows(registry, describe)
    if output.value == "json":
        typer.echo(jsonsafe.dumps(rows, indent=2))
    else:
        print_wide(registry_table(rows, kind=kind, about=about))


@app.command("methods", help="Every training method --method can name: built in, or from an installed plugin (its package, "
             "version and module:Class), and the plugins that were refused with why.",
             short_help="Every method --method can name, with the plugins' packages.")
def methods_list(output: Annotated[ListFormat, typer.Option("--format", help="Output format on stdout.")] = ListFormat("rich")) -> None:
    _print_registry(METHODS, output, kind="method", about="teachers", describe=lambda e: ", ".join(e.obj.roles) or "none")


@app.command("attacks", help="Every attack --attacks can name: built in, or from an installed plugin (its package, version "
             "and module:Class), and the plugins that were refused with why.",
             short_help="Every attack --attacks can name, with the plugins' packages.")
def attacks_list(output: Annotated[ListFormat, typer.Option("--format", help="Output format on stdout.")] = ListFormat("rich")) -> None:
    from advkd.attacks import ATTACKS

    _print_registry(ATTACKS, output, kind="attack", about="threat model", describe=lambda e: e.meta.get("threat_model", ""))


@app.command("speed", help="The speed paths advkd measured on this machine (precision and memory layout per network, batch "
             "and method family), from the cache in the user's cache directory ($ADVKD_CACHE_DIR, else ~/.cache/advkd). "
             "A run measures on first use; --paths measure measures again; --forget empties the cache.",
             short_help="The speed paths measured on this machine.")
def speed(
    output: Annotated[ListFormat, typer.Option("--format", help="Output format on stdout.")] = ListFormat("rich"),
    forget: Annotated[bool, typer.Option("--forget", help="Delete the cache: the next run of each network measures again.")] = False,
) -> None:
    from advkd.core.speed_choice import cache_path, read_cache, rows, this_machine

    path = cache_path()
    if forget:
        from advkd.core.files import remove

        remove(path)
        typer.echo(f"removed {path}")
        return
    entries, note = read_cache(path)
    if note:
        warn(note)
    mine = rows(this_machine(entries))
    if output.value == "json":
        typer.echo(jsonsafe.dumps({"cache": str(path), "entries": mine, "other_machines": len(entries) - len(mine)}, indent=2))
        return
    from rich.table import Table

    from advkd.core.console import print_wide

    table = Table(title=f"speed paths measured on this machine ({path})", title_justify="left")
    for col in ("networks", "batch", "family", "threads", "torch", "choice", "measured against the others", "measured"):
        table.add_column(col)
    for r in mine:
        table.add_row(*(str(r[k]) for k in ("networks", "batch", "family", "threads", "torch", "choice")), r["speedups"] or "one candidate", str(r["measured"]))
    print_wide(table)
    if not mine:
        typer.echo("nothing measured on this machine yet: the first training run of each network measures (a few seconds)")
    if len(entries) > len(mine):
        typer.echo(f"{len(entries) - len(mine)} more entr{'y' if len(entries) - len(mine) == 1 else 'ies'} from other machines")


# ----------------------------------------------------------------------------- presets


presets_app = typer.Typer(help="The presets --preset NAME can name: shipped ones and those in $ADVKD_PRESET_DIR (searched first).", no_args_is_help=True,
                          short_help="The presets --preset NAME can name, and their YAML.")
app.add_typer(presets_app, name="presets")
PresetsFormat = Enum("PresetsFormat", {"rich": "rich", "json": "json"}, type=str)  # type: ignore[misc]


@presets_app.command("list", help="Every preset name with its scale, what it is for, and the file --preset NAME loads "
                     "(a file in $ADVKD_PRESET_DIR named like a shipped preset hides it, and is marked).",
                     short_help="Every preset name with its scale, what it is for, and the file --preset NAME loads.")
def presets_list(output: Annotated[PresetsFormat, typer.Option("--format", help="Output format on stdout.")] = PresetsFormat("rich")) -> None:
    from advkd.core.console import print_wide
    from advkd.training.preset_catalog import list_preset_infos, presets_table

    infos = list_preset_infos()
    if output.value == "json":
        typer.echo(jsonsafe.dumps([i.as_json() for i in infos], indent=2))
    else:
        print_wide(presets_table(infos))


@presets_app.command("show", help="Where preset NAME lives (a comment line), then its YAML verbatim: redirect it to a file to start your own.",
                     short_help="Where preset NAME lives, then its YAML verbatim.")
def presets_show(name: Annotated[str, typer.Argument(metavar="NAME", help="Preset name (advkd presets list).")]) -> None:
    from advkd.training.preset_catalog import show_preset

    typer.echo(show_preset(name), nl=False)


# ----------------------------------------------------------------------------- entry point


def root_command() -> Any:
    """The Click group of the whole ``advkd`` command (what :mod:`advkd.argv` reads)."""
    return typer.main.get_command(app)


def main(argv: list[str] | None = None) -> int:
    """Run the CLI; user errors -> one line on stderr and exit code 2, no traceback.

    Operating-system failures (permissions, full disk, names too long, a file in the way) are
    the user's to fix too: one line naming the path and the fix (:mod:`advkd.core.oserrors`). Ctrl-C
    (our SIGINT handler, see :mod:`advkd.entry`) prints how to resume and exits 130.
    """
    from advkd.core.accel import tune_malloc
    from advkd.core.errors import cli_spelling, interrupt_handler
    from advkd.core.oserrors import describe, is_os_failure

    command = root_command()
    args = hoist_root_options(list(sys.argv[1:] if argv is None else argv), command)
    rich_help = typer.core.HAS_RICH
    previous = signal.signal(signal.SIGINT, interrupt_handler) if threading.current_thread() is threading.main_thread() else None
    try:
        check_text(args)  # before any work: every name and path may end up in a file advkd writes
        tune_malloc()  # before the first large allocation
        plain_help_when_narrow(args)
        # a stop signal anywhere (data loading, setup, an append) ends as exit 75 with its line; training
        # and attacks install their own handlers for their work, which say what they kept
        with cli_spelling(), stop_now_signals("it stopped before its work began; anything committed earlier is kept"):
            rv = command.main(args=args, prog_name="advkd", standalone_mode=False)
    except AdvkdError as e:
        print(f"advkd: error: {one_line(e)}", file=sys.stderr)
        return 2
    except click_exceptions.ClickException as e:
        ctx = getattr(e, "ctx", None)
        where = ctx.command_path if ctx is not None and ctx.command_path else "advkd"
        print(f"advkd: error: {one_line(e.format_message())} (see {where} --help)", file=sys.stderr)
        return 2
    except (Interrupted, typer.Abort, KeyboardInterrupt):
        print(interrupted_line(args, command), file=sys.stderr)
        return 130
    except Preempted as e:
        print(preempted_line(args, e, command), file=sys.stderr)
        return EXIT_PREEMPTED
    except BrokenPipeError:  # output piped into e.g. `head`, which closed early
        return 0
    except Exception as e:
        if not is_os_failure(e):
            raise
        print(f"advkd: error: {one_line(describe(e))}", file=sys.stderr)
        return 2
    finally:
        typer.core.HAS_RICH = rich_help
        if previous is not None:
            signal.signal(signal.SIGINT, previous)
    if rv == 130:  # a KeyboardInterrupt raised inside a command, which Typer turns into a silent exit 130
        print(interrupted_line(args, command), file=sys.stderr)
        return 130
    teardown()  # leave the torchrun process group together (no-op otherwise)
    return rv if isinstance(rv, int) else 0
