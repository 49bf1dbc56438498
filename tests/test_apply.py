"""The apply API: re-initialisation, parameter groups, and the L2-SP + L2 regulariser."""

from __future__ import annotations

import copy
import json
from dataclasses import replace

import pytest
import torch
from torch import nn
from torch.nn import functional as F

import heuristics
import heuristics.rules
from heuristics import LrGroup, binary_default
from recommender.finetune.apply import (
    ApplyError,
    L2SPRegulariser,
    apply_recommendation,
    hyperparameters_of,
    load_recommendation,
)
from recommender.finetune.loop import lr_scheduler, transforms
from recommender.finetune.training import _lr_at

MEASURES = {"linear_probe_accuracy": 0.8, "pretraining_gain": 0.2, "knn_accuracy": 0.75}


@pytest.fixture(scope="module")
def pretrained(backbone):
    """The default backbone's real ImageNet model (a private copy per test module)."""
    return backbone


def recommendation(backbone, **overrides):
    """A recommendation with three learning-rate groups at three rates: the paper's rules
    (the fitted ladder keeps one rate at most budgets), L2-SP on the lower blocks."""
    return heuristics.advise(
        MEASURES, blocks=backbone.blocks, head_modules=backbone.head_modules, num_images=500,
        num_classes=10, overrides=overrides, rules=heuristics.rules.PAPER_RULES)


def _document(rec, classes):
    """The parts of ``nbtl-recommend --json``'s document that a saved recommendation reads."""
    return {"schema_version": "1.1", "dataset": {"classes": list(classes)},
            "recommendation": rec.to_dict()}


def _inside(name, modules):
    return any(name == m or name.startswith(m + ".") for m in modules)


@pytest.mark.parametrize("use_init_model", [True, False])
def test_exactly_the_top_blocks_and_the_head_are_reinitialised(pretrained, use_init_model):
    rec = recommendation(pretrained, reinit_top_blocks=2)
    hp = rec.hyperparameters.to_dict()
    reinit = hp["reinit_modules"]
    assert reinit, "the override asks for two re-initialised blocks"
    model = copy.deepcopy(pretrained.model)
    before = {**dict(model.named_parameters()), **dict(model.named_buffers())}
    before = {k: v.detach().clone() for k, v in before.items()}
    init = pretrained.untrained_model() if use_init_model else None
    applied = apply_recommendation(model, rec, num_classes=7, seed=3, init_model=init)
    after = {**dict(model.named_parameters()), **dict(model.named_buffers())}

    assert model.get_classifier().out_features == 7
    for name, tensor in after.items():
        changed = (name not in before or before[name].shape != tensor.shape
                   or not torch.equal(before[name], tensor))
        expected = _inside(name, reinit) or name.startswith("classifier.")
        # BatchNorm's num_batches_tracked is 0 before and after a reset: nothing to change.
        if name.endswith("num_batches_tracked"):
            continue
        assert changed == expected, name
        assert (name in applied.reinitialised) == changed, name
    if use_init_model:  # the architecture's own initialisation, copied tensor for tensor
        fresh = init.state_dict()
        for name in applied.reinitialised:
            if not name.startswith("classifier."):
                assert torch.equal(after[name], fresh[name]), name


def test_reinitialisation_is_seeded(pretrained):
    rec = recommendation(pretrained, reinit_top_blocks=1)
    a = apply_recommendation(copy.deepcopy(pretrained.model), rec, num_classes=5, seed=1)
    b = apply_recommendation(copy.deepcopy(pretrained.model), rec, num_classes=5, seed=1)
    c = apply_recommendation(copy.deepcopy(pretrained.model), rec, num_classes=5, seed=2)
    wa, wb, wc = (x.model.get_classifier().weight for x in (a, b, c))
    assert torch.equal(wa, wb) and not torch.equal(wa, wc)


def test_every_trainable_parameter_is_in_exactly_one_group_with_its_lr(pretrained):
    rec = recommendation(pretrained, reinit_top_blocks=1)
    hp = rec.hyperparameters.to_dict()
    model = copy.deepcopy(pretrained.model)
    applied = apply_recommendation(model, rec, num_classes=10)
    groups = applied.param_groups()
    ids = [id(p) for g in groups for p in g["params"]]
    assert len(ids) == len(set(ids))
    assert set(ids) == {id(p) for p in model.parameters() if p.requires_grad}
    names = {id(p): n for n, p in model.named_parameters()}
    spec = {g["name"]: g for g in hp["lr_groups"]}
    for group in groups:
        assert group["lr"] == spec[group["name"]]["lr"] and group["weight_decay"] == 0.0
        for p in group["params"]:
            assert _inside(names[id(p)], spec[group["name"]]["modules"]), names[id(p)]
    assert len({g["lr"] for g in groups}) == 3  # head, upper, lower differ
    optimizer = applied.optimizer()
    assert isinstance(optimizer, torch.optim.SGD)
    assert optimizer.defaults["nesterov"] and optimizer.defaults["momentum"] == hp["momentum"]


def test_frozen_parameters_are_left_out(pretrained):
    model = copy.deepcopy(pretrained.model)
    model.conv_stem.weight.requires_grad_(False)
    applied = apply_recommendation(model, recommendation(pretrained), num_classes=3)
    assert all(p is not model.conv_stem.weight for g in applied.param_groups()
               for p in g["params"])


def test_regulariser_value_and_gradient_match_the_formula(pretrained):
    rec = recommendation(pretrained, reinit_top_blocks=1, l2sp_weight=0.03, l2_weight=0.002)
    hp = rec.hyperparameters.to_dict()
    model = copy.deepcopy(pretrained.model)
    w0 = {n: p.detach().clone() for n, p in model.named_parameters()}
    applied = apply_recommendation(model, rec, num_classes=4)
    reg = applied.regulariser
    assert reg.l2sp_names and reg.l2_names
    torch.manual_seed(0)
    with torch.no_grad():  # move away from the snapshot, so the L2-SP term is not zero
        for p in model.parameters():
            p.add_(0.01 * torch.randn_like(p))
    params = dict(model.named_parameters())
    expected = 0.5 * 0.03 * sum(((params[n] - w0[n]) ** 2).sum() for n in reg.l2sp_names)
    expected += 0.5 * 0.002 * sum((params[n] ** 2).sum() for n in reg.l2_names)
    value = reg()
    assert torch.allclose(value, expected, rtol=1e-5)
    model.zero_grad()
    value.backward()
    for name, p in params.items():
        if name in reg.l2sp_names:
            assert torch.allclose(p.grad, 0.03 * (p - w0[name]), atol=1e-7), name
        elif name in reg.l2_names:
            assert torch.allclose(p.grad, 0.002 * p, atol=1e-7), name
        else:
            assert p.grad is None or not p.grad.any(), name
    # L2-SP only on the lower transferred blocks; BatchNorm under neither; new layers under L2.
    lower = next(g for g in hp["lr_groups"] if g["name"] == "lower")["modules"]
    norms = {f"{m}.{k}" for m, mod in model.named_modules()
             if isinstance(mod, nn.BatchNorm2d) for k, _ in mod.named_parameters(recurse=False)}
    assert all(_inside(n, lower) for n in reg.l2sp_names)
    assert not norms & (set(reg.l2sp_names) | set(reg.l2_names))
    assert all(n in reg.l2_names for n in applied.reinitialised if n in params
               and n not in norms)


def test_excluding_biases_too(pretrained):
    rec = recommendation(pretrained, exclude_from_decay=("batchnorm", "bias"))
    applied = apply_recommendation(copy.deepcopy(pretrained.model), rec, num_classes=4)
    names = applied.regulariser.l2sp_names + applied.regulariser.l2_names
    assert "classifier.weight" in names and "classifier.bias" not in names


def test_plain_pytorch_loop_with_a_custom_model():
    """A model that is not from timm: named groups, Linear head replaced for new classes."""
    torch.manual_seed(0)
    model = nn.Sequential()
    model.add_module("body", nn.Sequential(nn.Linear(8, 16), nn.BatchNorm1d(16), nn.ReLU()))
    model.add_module("top", nn.Sequential(nn.Linear(16, 16), nn.ReLU()))
    model.add_module("fc", nn.Linear(16, 5))
    hp = replace(binary_default(head_modules=("fc", "top"), lr=0.05, weight_decay=0.01),
                 reinit_modules=("top",), l2sp_weight=0.1, exclude_from_decay=("batchnorm",),
                 lr_groups=(LrGroup("head", 0.1, (), ("fc", "top"), "l2"),
                            LrGroup("lower", 0.01, (), ("body",), "l2sp")))
    body = model.body[0].weight.detach().clone()
    applied = apply_recommendation(model, hp, num_classes=3)
    assert model.fc.out_features == 3
    assert torch.equal(model.body[0].weight, body)
    assert set(applied.regulariser.l2sp_names) == {"body.0.weight", "body.0.bias"}
    optimizer = applied.optimizer()
    x, y = torch.randn(64, 8), torch.randint(0, 3, (64,))
    losses = []
    for _ in range(30):
        loss = F.cross_entropy(model(x), y)
        losses.append(loss.item())
        optimizer.zero_grad()
        (loss + applied.regulariser()).backward()
        optimizer.step()
    assert losses[-1] < losses[0]


def test_a_recommendation_and_its_hyperparameters_are_accepted(pretrained):
    rec = recommendation(pretrained)
    for form in (rec, rec.hyperparameters):
        assert hyperparameters_of(form) is rec.hyperparameters


def test_a_json_document_is_read_through_load_recommendation(pretrained, tmp_path):
    rec = recommendation(pretrained)
    path = tmp_path / "out.json"
    path.write_text(json.dumps(_document(rec, classes=("a", "b", "c"))))
    for raw in (path, str(path), json.loads(path.read_text())):
        with pytest.raises(ApplyError, match="load_recommendation"):
            hyperparameters_of(raw)
    saved = load_recommendation(path)
    assert saved.hyperparameters == rec.hyperparameters and saved.classes == ("a", "b", "c")
    assert load_recommendation(json.loads(path.read_text())) == saved
    model = copy.deepcopy(pretrained.model)
    assert apply_recommendation(model, saved).groups


def test_a_document_without_a_recommendation_is_refused_naming_the_key(tmp_path):
    with pytest.raises(ApplyError, match="'recommendation'"):
        load_recommendation({"schema_version": "1.1", "dataset": {"classes": ["a", "b"]}})
    path = tmp_path / "report.txt"
    path.write_text("not json")
    with pytest.raises(ApplyError, match="not JSON"):
        load_recommendation(path)


def test_num_classes_defaults_to_the_saved_documents_classes(pretrained):
    saved = load_recommendation(_document(recommendation(pretrained), classes="abcdefg"))
    applied = apply_recommendation(copy.deepcopy(pretrained.model), saved)
    assert applied.model.get_classifier().out_features == 7


def test_num_classes_given_wins_over_the_saved_one(pretrained):
    saved = load_recommendation(_document(recommendation(pretrained), classes="abcdefg"))
    applied = apply_recommendation(copy.deepcopy(pretrained.model), saved, num_classes=3)
    assert applied.model.get_classifier().out_features == 3


def test_num_classes_defaults_to_the_results_dataset(pretrained, sample_dir):
    from recommender.config import Options
    from recommender.data.dataset import SOURCE_FOLDER, Dataset
    from recommender.pipeline import Result

    dataset = Dataset(root=sample_dir, source=SOURCE_FOLDER, classes=("x", "y", "z", "w"),
                      samples=(), skipped=(), dropped_classes=(), warnings=())
    result = Result(dataset=dataset, model={}, blocks=(), dims=(), probes=(),
                    recommendation=recommendation(pretrained), options=Options())
    applied = apply_recommendation(copy.deepcopy(pretrained.model), result)
    assert applied.model.get_classifier().out_features == 4


def test_a_recommendation_for_another_model_is_refused(pretrained):
    model = nn.Sequential(nn.Linear(4, 4))
    with pytest.raises(ApplyError, match="does not have"):
        apply_recommendation(model, recommendation(pretrained))
    only_head = binary_default(head_modules=("0",))
    hp = replace(only_head, lr_groups=only_head.lr_groups[:1])  # no group for the rest
    model = nn.Sequential(nn.Linear(4, 4), nn.Linear(4, 2))
    with pytest.raises(ApplyError, match="in no group"):
        apply_recommendation(model, hp)


def test_binary_default_is_one_lr_and_l2_on_everything(pretrained):
    model = copy.deepcopy(pretrained.model)
    applied = apply_recommendation(model, binary_default(), num_classes=6)
    assert {g["lr"] for g in applied.param_groups()} == {0.01}
    reg = applied.regulariser
    assert not reg.l2sp_names
    assert set(reg.l2_names) == {n for n, _ in model.named_parameters()}
    assert applied.reinitialised and all(n.startswith("classifier.")
                                         for n in applied.reinitialised)


def test_regulariser_on_a_bare_module_and_its_snapshot_is_frozen():
    model = nn.Linear(3, 2)
    reg = L2SPRegulariser(model, ["weight"], ["bias"], alpha=1.0, beta=1.0)
    with torch.no_grad():
        model.weight.add_(1.0)  # the snapshot must not follow the parameter
    assert torch.allclose(reg(), 0.5 * (6 * 1.0) + 0.5 * (model.bias ** 2).sum())
    assert not any(b.requires_grad for b in reg.buffers())
    with pytest.raises(ApplyError, match="both"):
        L2SPRegulariser(model, ["weight"], ["weight"], alpha=1.0, beta=1.0)


# --- what a loop needs besides the groups: schedule, LP-FT phases, loss, transforms ---------

def _small(lp_ft=False, lp_epochs=0, **changes):
    """A three-part network (body with BatchNorm, top, fc head) and hyperparameters for it."""
    torch.manual_seed(0)
    model = nn.Sequential()
    model.add_module("body", nn.Sequential(nn.Linear(8, 16), nn.BatchNorm1d(16), nn.ReLU()))
    model.add_module("top", nn.Sequential(nn.Linear(16, 16), nn.ReLU()))
    model.add_module("fc", nn.Linear(16, 3))
    hp = replace(binary_default(head_modules=("fc",)), lp_ft=lp_ft, lp_epochs=lp_epochs,
                 lr_groups=(LrGroup("head", 0.1, (), ("fc",), "l2"),
                            LrGroup("rest", 0.01, (), ("body", "top"), "l2")), **changes)
    return model, hp


def _factors(scheduler, optimizer, steps):
    """The learning rate of the first group over ``steps`` batches, relative to its peak."""
    out = []
    for _ in range(steps):
        out.append(optimizer.param_groups[0]["lr"] / optimizer.param_groups[0]["initial_lr"])
        optimizer.step()
        scheduler.step()
    return out


def test_scheduler_warms_up_linearly_then_decays_by_cosine():
    model, hp = _small(epochs=4, warmup_epochs=1, schedule="cosine")
    applied = apply_recommendation(model, hp)
    optimizer = applied.optimizer()
    factors = _factors(applied.scheduler(optimizer, steps_per_epoch=2), optimizer, 9)
    # 2 warm-up steps (1 epoch x 2 batches), then cosine over the other 6 of 8 steps.
    expected = [0.5, 1.0, 1.0, 0.933, 0.75, 0.5, 0.25, 0.067, 0.0]
    assert factors == pytest.approx(expected, abs=1e-3)
    assert optimizer.param_groups[0]["initial_lr"] == 0.1  # the head group's peak


@pytest.mark.parametrize("schedule", ["cosine", "step", "constant"])
def test_scheduler_follows_nbtls_own_schedule(schedule):
    optimizer = torch.optim.SGD([nn.Parameter(torch.zeros(1))], lr=0.2)
    factors = _factors(lr_scheduler(optimizer, 5, epochs=6, warmup_epochs=2,
                                    schedule=schedule), optimizer, 30)
    assert factors == pytest.approx([_lr_at(s, 1.0, 10, 30, schedule) for s in range(30)])


def test_scheduler_past_the_last_step_keeps_the_last_rate():
    optimizer = torch.optim.SGD([nn.Parameter(torch.zeros(1))], lr=0.2)
    factors = _factors(lr_scheduler(optimizer, 1, epochs=4, warmup_epochs=0,
                                    schedule="cosine"), optimizer, 8)
    assert factors[4:] == [0.0] * 4


def test_without_lp_ft_one_phase_trains_everything_for_all_epochs():
    model, hp = _small(epochs=7)
    (phase,) = apply_recommendation(model, hp).phases()
    assert phase.epochs == 7 and phase.warmup_epochs == hp.warmup_epochs
    phase.train()
    assert model.training and all(p.requires_grad for p in model.parameters())


def test_lp_ft_head_phase_trains_the_head_alone_with_the_rest_frozen_in_eval_mode():
    model, hp = _small(lp_ft=True, lp_epochs=2, epochs=5)
    applied = apply_recommendation(model, hp)
    head, rest = applied.phases()
    assert (head.epochs, rest.epochs) == (2, 3)
    before = copy.deepcopy(model.state_dict())
    head.train()
    optimizer = head.optimizer()
    loss = applied.loss()(model(torch.randn(16, 8)), torch.randint(0, 3, (16,)))
    (loss + applied.regulariser()).backward()
    optimizer.step()
    after = model.state_dict()
    changed = {k for k in after if not torch.equal(before[k], after[k])}
    assert changed == {"fc.weight", "fc.bias"}  # BatchNorm statistics did not move either
    assert not model.body[1].training and not model.top[0].training and model.fc.training
    rest.train()
    assert all(m.training for m in model.modules())
    assert all(p.requires_grad for p in model.parameters())


def test_lp_ft_head_phase_starts_at_its_peak_without_warm_up():
    model, hp = _small(lp_ft=True, lp_epochs=2, epochs=5, warmup_epochs=1)
    head, rest = apply_recommendation(model, hp).phases()
    optimizer = head.optimizer()
    assert [g["name"] for g in optimizer.param_groups] == ["head"]
    assert _factors(head.scheduler(optimizer, 4), optimizer, 1) == [1.0]
    optimizer = rest.optimizer()
    assert _factors(rest.scheduler(optimizer, 4), optimizer, 1) == [0.25]


def test_loss_has_the_recommended_label_smoothing():
    model, hp = _small(label_smoothing=0.2)
    loss = apply_recommendation(model, hp).loss()
    logits, labels = torch.randn(6, 3), torch.tensor([0, 1, 2, 0, 1, 2])
    assert loss.label_smoothing == 0.2
    assert torch.allclose(loss(logits, labels),
                          F.cross_entropy(logits, labels, label_smoothing=0.2))


@pytest.mark.parametrize("train", [True, False])
def test_transforms_give_the_backbones_input_size(pretrained, train):
    from PIL import Image

    image = Image.new("RGB", (28, 40), (120, 30, 200))
    for source in (pretrained, pretrained.model):  # the Backbone, or the timm model alone
        assert transforms(source, train)(image).shape == (3, 224, 224)
    smaller = replace(pretrained, data_config={**pretrained.data_config,
                                               "input_size": (3, 96, 96)})
    assert transforms(smaller, train)(image).shape == (3, 96, 96)
