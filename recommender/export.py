"""The recommendation as text to paste into your own trainer: timm's ``train.py`` flags or a
PyTorch snippet (``nbtl-recommend PATH --emit timm|torch``).

Plain Python on the JSON view of a :class:`~recommender.pipeline.Result` (no rich, no
typer), so the same text comes from the command line and the API.
"""

from __future__ import annotations

import pprint
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from recommender.pipeline import Result

EMIT_KINDS = ("timm", "torch")

# nbtl's optimiser -> timm's --opt: timm's "nesterov" is SGD with Nesterov momentum and its
# "momentum" plain SGD with momentum (timm.optim.create_optimizer_v2).
_TIMM_OPT = {"sgd_nesterov": "nesterov", "sgd": "momentum", "adamw": "adamw"}


def emit(result: Result, kind: str) -> str:
    """The recommendation of ``result`` as ``kind`` text (one of :data:`EMIT_KINDS`).

    Raises
    ------
    ValueError
        An unknown ``kind`` (the message lists the known ones).
    """
    if kind not in EMIT_KINDS:
        raise ValueError(f"unknown --emit kind {kind!r}; expected one of {', '.join(EMIT_KINDS)}")
    doc = result.to_dict()
    return _timm(doc) if kind == "timm" else _torch(doc, _load_call(result.options))


def _load_call(options: Any) -> str:
    """How the snippet loads the backbone the analysis used (the embedded default's weights
    need no hub)."""
    args = [repr(options.model)] if options.model else []
    if options.weights is not None:
        args.append(f"weights={str(options.weights)!r}")
    return f"load_backbone({', '.join(args)})"


def _timm(doc: dict[str, Any]) -> str:
    """``python train.py`` with the flags the recommendation maps to, and what does not map."""
    hp = doc["recommendation"]["hyperparameters"]
    flags = [f"--model {doc['model']['name']} --pretrained "
             f"--num-classes {doc['dataset']['num_classes']}"]
    if doc["settings"].get("image_size"):
        flags.append(f"--img-size {doc['settings']['image_size']}")
    optimiser = f"--opt {_TIMM_OPT[hp['optimizer']]} --lr {hp['base_lr']:.3g}"
    if hp["optimizer"] != "adamw":
        optimiser += f" --momentum {hp['momentum']:g}"
    flags.append(f"{optimiser} --weight-decay {hp['l2_weight']:g}")
    flags.append(_timm_schedule(hp))
    flags.append(f"--smoothing {hp['label_smoothing']:g} -b {hp['batch_size']}")
    lines = [
        "# timm's train.py (pytorch-image-models) with nbtl's recommendation. DATA_DIR holds",
        "# train/ and validation/ class folders (--train-split and --val-split name others).",
        "python train.py DATA_DIR \\",
        *(f"    {flag} \\" for flag in flags[:-1]), f"    {flags[-1]}",
        "# Not expressible as train.py flags; use `nbtl-recommend PATH --emit torch` or",
        "# recommender.apply_recommendation for these:",
    ]
    rates = ", ".join(f"{g['name']} {g['lr']:.3g}" for g in hp["lr_groups"])
    lines.append(f"#   per-group learning rates: {rates} (train.py: one --lr for all)")
    if hp["l2sp_weight"] > 0:
        lines.append(f"#   L2-SP alpha {hp['l2sp_weight']:g} toward the pre-trained weights on "
                     f"{', '.join(hp['l2sp_modules'])} (train.py: --weight-decay pulls every "
                     "weight toward zero)")
    if hp["reinit_modules"]:
        lines.append(f"#   re-initialised top blocks: {', '.join(hp['reinit_modules'])} "
                     "(train.py re-initialises the classifier only)")
    if hp["lp_ft"]:
        lines.append(f"#   LP-FT: the head alone for the first {hp['lp_epochs']} epoch(s), the "
                     "rest frozen (train.py trains every layer from the start)")
    excluded = ", ".join(hp["exclude_from_decay"]) or "nothing"
    lines.append(f"#   decay exclusions: nbtl excludes {excluded}; train.py excludes every bias "
                 "and normalisation weight")
    return "\n".join(lines) + "\n"


def _timm_schedule(hp: dict[str, Any]) -> str:
    """timm's scheduler flags for nbtl's warm-up and schedule (cosine to 0; step x0.1 at half
    and three quarters of the steps after warm-up; constant)."""
    epochs, warmup = hp["epochs"], hp["warmup_epochs"]
    common = f"--epochs {epochs} --warmup-epochs {warmup} --warmup-lr 0 --cooldown-epochs 0"
    if hp["schedule"] == "step":
        after = epochs - warmup
        milestones = f"{warmup + after // 2} {warmup + 3 * after // 4}"
        return f"--sched multistep --decay-milestones {milestones} --decay-rate 0.1 {common}"
    if hp["schedule"] == "constant":
        return f"--sched step --decay-rate 1 {common}"
    return f"--sched cosine --min-lr 0 {common}"


def _torch(doc: dict[str, Any], load: str) -> str:
    """A PyTorch training loop that follows the whole recommendation: the re-initialised
    blocks, the parameter groups and their rates, L2-SP and L2, the optimiser, the warm-up
    and schedule, LP-FT and label smoothing."""
    hp = doc["recommendation"]["hyperparameters"]
    model = doc["model"]["name"]
    groups = "\n".join(
        f"#   {g['name']:<8} lr {g['lr']:<8.3g} {_penalty(g, hp):<12} "
        f"{'(every other parameter)' if g.get('rest') else ', '.join(g['modules'])}"
        for g in hp["lr_groups"])
    literal = pprint.pformat(hp, width=94, compact=True, sort_dicts=False)
    lp = max(0, min(hp["lp_epochs"], hp["epochs"] - 1)) if hp["lp_ft"] else 0
    if lp:
        phases = ("train([g for g in groups if g[\"name\"] == \"head\"], LP_EPOCHS, 0)"
                  "  # LP-FT: the head alone\n"
                  "train(groups, EPOCHS - LP_EPOCHS, WARMUP_EPOCHS)")
    else:
        phases = "train(groups, EPOCHS, WARMUP_EPOCHS)"
    return f'''\
# PyTorch: fine-tune {model} on {doc["dataset"]["num_classes"]} classes as nbtl recommends.
import math

import torch
from torch.nn import functional as F

from heuristics import Hyperparameters
from recommender import apply_recommendation, load_backbone

hp = Hyperparameters.from_dict(
{_indent(literal)})
EPOCHS, WARMUP_EPOCHS, LP_EPOCHS = {hp["epochs"]}, {hp["warmup_epochs"]}, {lp}
model = {load}.model  # the analysed backbone: timm {model}, its weights
applied = apply_recommendation(model, hp, num_classes={doc["dataset"]["num_classes"]}, seed=0)
groups = applied.param_groups()  # peak lr per group; the penalty is in applied.regulariser()
{groups}
loader = ...  # your DataLoader of (images, labels), batch size {hp["batch_size"]}


def lr_factor(step, warmup, total):
    """{_schedule_doc(hp)}"""
    if step < warmup:
        return (step + 1) / warmup
    progress = min(1.0, (step - warmup) / max(1, total - warmup))
    {_schedule_return(hp["schedule"])}


def train(param_groups, epochs, warmup_epochs):
    {_optimizer(hp)}
    warmup, total = warmup_epochs * len(loader), epochs * len(loader)
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: lr_factor(step, warmup, total))
    trainable = {{id(p) for g in param_groups for p in g["params"]}}
    for p in model.parameters():
        p.requires_grad_(id(p) in trainable)
    for _epoch in range(epochs):
        model.train()
        for images, labels in loader:
            loss = F.cross_entropy(model(images), labels, label_smoothing={hp["label_smoothing"]!r})
            loss = loss + applied.regulariser()  # {_regulariser_doc(hp)}
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            scheduler.step()


{phases}
'''


def _indent(text: str) -> str:
    return "\n".join(f"    {line}" for line in text.splitlines())


def _penalty(group: dict[str, Any], hp: dict[str, Any]) -> str:
    if group["penalty"] == "l2sp":
        return f"L2-SP {hp['l2sp_weight']:g}"
    return f"L2 {hp['l2_weight']:g}"


def _optimizer(hp: dict[str, Any]) -> str:
    """The optimiser line; weight decay stays 0 because the regulariser is the penalty."""
    if hp["optimizer"] == "adamw":
        return f"optimizer = torch.optim.AdamW(param_groups, lr={hp['base_lr']!r}, weight_decay=0)"
    nesterov = hp["optimizer"] == "sgd_nesterov"
    return (f"optimizer = torch.optim.SGD(param_groups, lr={hp['base_lr']!r}, "
            f"momentum={hp['momentum']!r}, nesterov={nesterov})")


def _schedule_doc(hp: dict[str, Any]) -> str:
    after = {"cosine": "cosine decay to 0", "constant": "constant",
             "step": "x0.1 at half and at three quarters of the steps after it"}
    return f"Linear warm-up, then {after.get(hp['schedule'], hp['schedule'])} (nbtl's schedule)."


def _schedule_return(schedule: str) -> str:
    if schedule == "step":
        return "return 0.1 ** ((progress >= 0.5) + (progress >= 0.75))"
    if schedule == "constant":
        return "return 1.0"
    return "return 0.5 * (1.0 + math.cos(math.pi * progress))"


def _regulariser_doc(hp: dict[str, Any]) -> str:
    if hp["l2sp_weight"] > 0:
        return f"L2-SP {hp['l2sp_weight']:g} toward w0, L2 {hp['l2_weight']:g} on the rest"
    return f"L2 {hp['l2_weight']:g}"
