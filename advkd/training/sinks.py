"""Optional metric sinks for training runs: TensorBoard and Weights & Biases, off by default.

``--log tensorboard`` writes every epoch's row of ``metrics.jsonl`` (losses, accuracies, lr,
method state such as B-MTARD's temperatures, one scalar per list element) as scalars under
``<run>/tensorboard``; ``--log wandb`` sends the same rows to a W&B run named like the advkd run
(project ``$WANDB_PROJECT``, default ``advkd``). From Python: ``log_to=["tensorboard"]`` of ``advkd.train`` / ``advkd.distill``.
Neither package is a dependency: a missing one is one line naming the extra that adds it
(``pip install 'advkd[tensorboard]'`` / ``'advkd[wandb]'``). Sinks only read what the run
already writes, so they change no number.
"""
from __future__ import annotations

import dataclasses
import hashlib
import math
import os
from pathlib import Path
from typing import Any, Protocol

from advkd.core.errors import AdvkdError, spell
from advkd.core.files import make_dirs

SINK_NAMES = ("tensorboard", "wandb")


class Sink(Protocol):
    def log(self, row: dict[str, Any]) -> None: ...
    def close(self) -> None: ...


def scalars(row: dict[str, Any]) -> dict[str, float]:
    """A metrics row as flat scalars: numbers as they are, lists as ``key/0``, ``key/1`` ..."""
    out: dict[str, float] = {}
    for key, value in row.items():
        if key == "epoch" or isinstance(value, bool):
            continue
        if isinstance(value, (int, float)) and math.isfinite(float(value)):
            out[key] = float(value)
        elif isinstance(value, (list, tuple)):
            for i, v in enumerate(value):
                if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(float(v)):
                    out[f"{key}/{i}"] = float(v)
    return out


def _selected(name: str) -> str:
    return spell(f"--log {name}", f"log_to=[{name!r}]")


def missing_package(name: str, *, then: str = "") -> AdvkdError:
    """The one line for a sink whose package is not installed: the extra of the same name adds it."""
    return AdvkdError(f"{_selected(name)} needs the optional {name} package: pip install 'advkd[{name}]'{then}")


class TensorBoardSink:
    @staticmethod
    def require() -> Any:
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError:
            raise missing_package("tensorboard") from None
        return SummaryWriter

    def __init__(self, run_path: Path, cfg: Any) -> None:
        make_dirs(Path(run_path) / "tensorboard")  # the folder through the one door; the files in it are TensorBoard's
        self.writer = self.require()(log_dir=str(Path(run_path) / "tensorboard"))

    def log(self, row: dict[str, Any]) -> None:
        for key, value in scalars(row).items():
            self.writer.add_scalar(key, value, int(row["epoch"]))
        self.writer.flush()

    def close(self) -> None:
        self.writer.close()


class WandbSink:
    @staticmethod
    def require() -> Any:
        try:
            import wandb
        except ImportError:
            raise missing_package("wandb", then=" (and wandb login)") from None
        return wandb

    def __init__(self, run_path: Path, cfg: Any) -> None:
        wandb = self.require()
        run_id = hashlib.sha256(str(Path(run_path).resolve()).encode()).hexdigest()[:16]  # a resumed run continues its W&B run
        make_dirs(Path(run_path) / "wandb")  # the folder through the one door; the files in it are W&B's
        self.run = wandb.init(project=os.environ.get("WANDB_PROJECT", "advkd"), name=cfg.name, id=run_id, resume="allow",
                              dir=str(run_path), config=dataclasses.asdict(cfg))

    def log(self, row: dict[str, Any]) -> None:
        self.run.log(scalars(row), step=int(row["epoch"]))

    def close(self) -> None:
        self.run.finish()


SINKS = {"tensorboard": TensorBoardSink, "wandb": WandbSink}


def check_sink_names(names: list[str] | None) -> list[str]:
    out = []
    for name in names or []:
        key = name.strip().lower()
        if key not in SINKS:
            raise AdvkdError(f"{_selected(name)}: one of {', '.join(SINK_NAMES)}")
        SINKS[key].require()  # a missing package is refused before any work
        out.append(key)
    return out


def open_sinks(names: list[str], run_path: Path, cfg: Any) -> list[Sink]:
    return [SINKS[n](run_path, cfg) for n in names]
