"""--emit: the recommendation as timm train.py flags and as a PyTorch snippet."""

from __future__ import annotations

import argparse
import shlex

import pytest

import heuristics
import heuristics.rules
from recommender.config import Options
from recommender.export import EMIT_KINDS, emit

BLOCKS = [heuristics.Block(f"stage{i}", (f"blocks.{i}",)) for i in range(5)]
MEASURES = {"linear_probe_accuracy": 0.72, "pretraining_gain": 0.2, "source_confidence": 0.26,
            "knn_accuracy": 0.7}


class _Result:
    """What emit() reads of a Result: its JSON document. By default the paper's rules, whose
    advice moves every axis (L2-SP, per-group rates, re-initialised blocks) for these
    measures; ``fitted=True``: the shipped table (at its default budget: keep the default)."""

    def __init__(self, fitted: bool = False, **overrides):
        self.options = Options()
        self.recommendation = heuristics.advise(
            MEASURES, blocks=BLOCKS, num_images=200, num_classes=10, overrides=overrides,
            **({} if fitted else {"rules": heuristics.rules.PAPER_RULES}))

    def to_dict(self):
        return {"dataset": {"num_classes": 10}, "model": {"name": "tf_efficientnet_lite0"},
                "settings": {"image_size": None},
                "recommendation": self.recommendation.to_dict()}


def _train_py_parser() -> argparse.ArgumentParser:
    """The options of timm's train.py (pytorch-image-models) that --emit timm uses, with
    train.py's own names and types (train.py is not part of the timm package, so it cannot be
    imported)."""
    parser = argparse.ArgumentParser(exit_on_error=False)
    parser.add_argument("data_dir")
    parser.add_argument("--model")
    parser.add_argument("--pretrained", action="store_true")
    for name in ("--num-classes", "--img-size", "--epochs", "--warmup-epochs",
                 "--cooldown-epochs"):
        parser.add_argument(name, type=int)
    parser.add_argument("-b", "--batch-size", type=int)
    for name in ("--opt", "--sched"):
        parser.add_argument(name)
    for name in ("--lr", "--momentum", "--weight-decay", "--warmup-lr", "--min-lr",
                 "--smoothing", "--decay-rate", "--decay-epochs"):
        parser.add_argument(name, type=float)
    parser.add_argument("--decay-milestones", type=int, nargs="+")
    return parser


def _timm_args(text: str) -> argparse.Namespace:
    command = " ".join(line for line in text.replace("\\\n", " ").splitlines()
                       if not line.startswith("#"))
    words = shlex.split(command)
    assert words[:2] == ["python", "train.py"]
    parser = _train_py_parser()
    args, unknown = parser.parse_known_args(words[2:])
    assert unknown == []
    return args


def test_timm_flags_are_train_py_options_with_the_recommended_values():
    result = _Result()
    hp = result.recommendation.hyperparameters
    args = _timm_args(emit(result, "timm"))
    assert (args.model, args.pretrained, args.num_classes) == ("tf_efficientnet_lite0", True, 10)
    assert args.lr == pytest.approx(hp.base_lr, rel=1e-2)
    assert args.weight_decay == hp.l2_weight and args.smoothing == hp.label_smoothing
    assert (args.epochs, args.warmup_epochs, args.batch_size) == (hp.epochs, hp.warmup_epochs,
                                                                 hp.batch_size)
    assert args.opt == "nesterov" and args.sched == "cosine"


def test_timm_step_schedule_decays_at_half_and_three_quarters_after_warm_up():
    args = _timm_args(emit(_Result(schedule="step", epochs=43, warmup_epochs=3), "timm"))
    assert args.sched == "multistep" and args.decay_milestones == [23, 33]


def test_timm_output_names_what_train_py_cannot_express():
    text = emit(_Result(lp_ft=True), "timm")
    notes = "\n".join(line for line in text.splitlines() if line.startswith("#"))
    for what in ("per-group learning rates", "L2-SP", "re-initialised", "LP-FT", "--emit torch"):
        assert what in notes


def test_torch_snippet_compiles():
    compile(emit(_Result(), "torch"), "<emit torch>", "exec")
    compile(emit(_Result(fitted=True), "torch"), "<emit torch>", "exec")


def test_torch_snippet_carries_the_concrete_values():
    result = _Result()
    hp = result.recommendation.hyperparameters
    text = emit(result, "torch")
    assert "num_classes=10" in text and f"label_smoothing={hp.label_smoothing!r}" in text
    assert f"momentum={hp.momentum!r}, nesterov=True" in text
    assert "applied.regulariser()" in text and f"L2-SP {hp.l2sp_weight:g}" in text
    for group in hp.lr_groups:
        assert f"#   {group.name:<8} lr {group.lr:<8.3g}" in text


def test_torch_snippet_with_lp_ft_trains_the_head_alone_first():
    text = emit(_Result(lp_ft=True, lp_epochs=2), "torch")
    compile(text, "<emit torch>", "exec")
    assert 'train([g for g in groups if g["name"] == "head"], LP_EPOCHS, 0)' in text
    assert "EPOCHS - LP_EPOCHS" in text


def test_torch_snippet_loads_the_embedded_default_without_a_hub():
    assert "model = load_backbone().model" in emit(_Result(), "torch")


def test_unknown_kind_is_refused_naming_the_known_ones():
    with pytest.raises(ValueError, match=", ".join(EMIT_KINDS)):
        emit(_Result(), "keras")
