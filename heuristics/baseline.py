"""The binary default as a typed value: what the non-binary recommendation is measured against.

The common fine-tuning practice that Plested, Shen, Gedeon 2021 ("Non-binary deep transfer
learning for image classification", arXiv 2107.08585) improve on: every layer transferred and
only the classifier new, one learning rate for every layer, L2 weight decay toward zero (no
L2-SP), SGD with Nesterov momentum. Li, Grandvalet, Davoine 2018 (L2-SP) fine-tune their
baselines at lr 0.01, momentum 0.9; Kornblith, Shlens, Le 2019 ("Do Better ImageNet Models
Transfer Better?") use Nesterov momentum 0.9 and grids around these values. The constants live
with the rule table's sources (:mod:`heuristics.rules.common`), whose defaults fall back to them.
"""

from __future__ import annotations

from collections.abc import Sequence

from heuristics.advisor import advise
from heuristics.rules.common import BINARY_LR, BINARY_MOMENTUM, BINARY_WEIGHT_DECAY
from heuristics.rules.lr import effective_lr
from heuristics.types import Hyperparameters, LrGroup


def binary_default(*, head_modules: Sequence[str] = (), lr: float = BINARY_LR,
                   weight_decay: float = BINARY_WEIGHT_DECAY, momentum: float = BINARY_MOMENTUM,
                   budget: Hyperparameters | None = None) -> Hyperparameters:
    """The binary default: every block transferred, one learning rate, L2 toward zero.

    Parameters
    ----------
    head_modules : sequence of str
        The classifier's module names (always new): the ``"head"`` group, under L2. Every other
        parameter is in the ``"all"`` group (``rest``), under L2 too; BatchNorm parameters are
        not excluded from decay.
    lr, weight_decay, momentum : float
        The one learning rate, the L2 weight and the SGD (Nesterov) momentum.
    budget : Hyperparameters, optional
        Where the training protocol (``batch_size``, ``epochs``, ``steps``, ``schedule``,
        ``warmup_epochs``, ``label_smoothing``) comes from, e.g. the recommendation it is
        compared with; by default the rule table's own defaults with no measures
        (``advise({})``).

    Returns
    -------
    Hyperparameters
        No block re-initialised, no split point, no L2-SP, no LP-FT; ``effective_lr`` as the
        rule table computes it (:func:`heuristics.rules.lr.effective_lr`).

    Raises
    ------
    TypeError
        ``head_modules`` is a string (write ``("classifier",)``).
    """
    if isinstance(head_modules, str):
        raise TypeError(f"head_modules must be a sequence of module names, got the string "
                        f"{head_modules!r}; write ({head_modules!r},)")
    head = tuple(head_modules)
    protocol = budget if budget is not None else advise({}).hyperparameters
    return Hyperparameters(
        reinit_top_blocks=0,
        reinit_modules=(),
        split_block=None,
        lr_groups=(LrGroup("head", lr, (), head, "l2"),
                   LrGroup("all", lr, (), (), "l2", rest=True)),
        optimizer="sgd_nesterov",
        momentum=momentum,
        base_lr=lr,
        effective_lr=effective_lr(lr, momentum),
        l2sp_weight=0.0,
        l2sp_modules=(),
        l2_weight=weight_decay,
        l2_modules=head,
        exclude_from_decay=(),
        batch_size=protocol.batch_size,
        epochs=protocol.epochs,
        steps=protocol.steps,
        schedule=protocol.schedule,
        warmup_epochs=protocol.warmup_epochs,
        lp_ft=False,
        lp_epochs=0,
        label_smoothing=protocol.label_smoothing,
    )
