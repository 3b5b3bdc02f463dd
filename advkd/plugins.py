"""The stable surface for outside code: your own method, attack, architecture or dataset.

Everything a plugin needs is importable from here, and only what is listed in ``__all__`` is
promised to stay (``tests/test_plugins.py`` fails when it changes by accident).

A method subclasses :class:`Method`:

- ``name`` (class attribute): how ``--method`` names it; for an entry point, the entry point's name;
- ``roles``: the teachers it takes, a tuple of ``"teacher"`` (single-teacher methods) or
  ``"clean_teacher"`` and ``"robust_teacher"`` (two-teacher methods); ``()`` for none;
- ``Params``: a dataclass of its hyper-parameters with their defaults (subclass
  :class:`InnerParams` to get ``eps``, ``step_size``, ``steps``, ``init``; ``--set method.KEY=VALUE``
  sets any field and is checked against its type);
- ``perturb(student, x, y) -> x_adv``: the inner maximisation, called with the student in train
  mode; return detached images in [0, 1]. ``self.attack(loss_fn, x)`` runs the shared
  projected-gradient engine with the method's inner settings (``loss_fn(x_adv)`` returns a scalar
  to maximise) and :func:`training_mode` switches the student to eval mode inside it;
- ``loss(student, x, x_adv, y) -> (loss, scalars)``: the outer objective, student in train mode;
  ``scalars`` (a dict of floats) is averaged over the epoch into ``metrics.jsonl``;
- optionally ``start_epoch``, ``end_epoch``, ``state_dict`` / ``load_state_dict`` (state that must
  survive a resume: balancer weights, temperatures).

Teachers are ``self.teachers[role]``, frozen in eval mode; ``self.teacher_logits(role, x)`` caches
one no-grad forward per batch. :func:`kl_div` (``reduction="batchmean"`` or ``"mean"``, the
element mean of the references), :func:`klm` (RSLAD's smoothed KL) and :func:`tempered_probs`
are the KL helpers the built-in methods use.

An architecture is a callable ``f(num_classes=..., **kwargs) -> nn.Module`` (a class or a
function) seeing images in [0, 1]. A dataset is a callable ``loader(split, data_dir, download,
seed) -> TensorData`` ("train" or "test", the whole split in memory as uint8 (N, C, H, W) images and
int64 labels) with the attributes ``num_classes`` and ``image_size`` (``channels`` if not 3).

An attack subclasses :class:`Attack`: ``Params`` (a frozen dataclass built with :func:`param`, or
:class:`NoParams`) and ``perturb(model, x, y) -> x_adv`` (the model is already in eval mode;
``self.eps.value`` is the budget).

Register through your package's ``pyproject.toml`` (``[project.entry-points."advkd.methods"]
mykd = "mypkg.kd:MyKD"``; groups ``advkd.attacks``, ``advkd.models``, ``advkd.datasets``), or name
the class directly: ``--method mypkg.kd:MyKD``. docs/plugins.md walks through both.
"""
from __future__ import annotations

from advkd.attacks.engine import Attack, NoParams, param, projected_gradient
from advkd.attacks.modes import training_mode
from advkd.core.errors import AdvkdError
from advkd.core.plugins import GROUPS, Origin
from advkd.data.batches import TensorData
from advkd.methods.base import InnerParams, Method
from advkd.methods.losses import kl_div, klm, tempered_probs

__all__ = [
    "AdvkdError",
    "Attack",
    "GROUPS",
    "InnerParams",
    "Method",
    "NoParams",
    "Origin",
    "TensorData",
    "kl_div",
    "klm",
    "param",
    "projected_gradient",
    "tempered_probs",
    "training_mode",
]
