"""MixedOptimizer: AdamW for the selection network beside SGD for the backbone, as one optimiser."""
import copy

import pytest
import torch

from ada3d_edge.models import Ada3DConfig, build_ada3d
from ada3d_edge.train.build import make_optimizer
from ada3d_edge.train.checkpoint import read_checkpoint, save_checkpoint
from ada3d_edge.train.config import recipe_from_dict
from ada3d_edge.train.optimizers import MixedOptimizer
from train_helpers import tiny_recipe


def _two_layers():
    torch.manual_seed(0)
    return torch.nn.Linear(4, 3), torch.nn.Linear(4, 3)


def _loss(a, b):
    x = torch.arange(8.0).reshape(2, 4)
    return (a(x) ** 2).sum() + (b(x) ** 2).sum()


def test_mixed_steps_like_the_two_optimisers_apart():
    a, b = _two_layers()
    a2, b2 = copy.deepcopy(a), copy.deepcopy(b)
    mixed = MixedOptimizer([torch.optim.AdamW(a.parameters(), lr=0.01),
                            torch.optim.SGD(b.parameters(), lr=0.05, momentum=0.9)])
    apart = [torch.optim.AdamW(a2.parameters(), lr=0.01), torch.optim.SGD(b2.parameters(), lr=0.05, momentum=0.9)]
    for _ in range(3):
        mixed.zero_grad()
        _loss(a, b).backward()
        mixed.step()
        for o in apart:
            o.zero_grad()
        _loss(a2, b2).backward()
        for o in apart:
            o.step()
    for p, q in zip(list(a.parameters()) + list(b.parameters()), list(a2.parameters()) + list(b2.parameters())):
        assert torch.equal(p, q)


def test_scheduler_reaches_every_group_also_after_a_reload(tmp_path):
    a, b = _two_layers()
    mixed = MixedOptimizer([torch.optim.AdamW(a.parameters(), lr=0.01), torch.optim.SGD(b.parameters(), lr=0.1)])
    sched = torch.optim.lr_scheduler.LambdaLR(mixed, lambda s: 0.5 ** s)
    mixed.zero_grad()
    _loss(a, b).backward()
    mixed.step()
    sched.step()
    save_checkpoint(tmp_path / "ck.pt", {"optimizer": mixed.state_dict()})
    mixed.load_state_dict(read_checkpoint(tmp_path / "ck.pt")["optimizer"])  # weights_only load
    assert mixed.optimizers[0].state[a.weight]["step"] == 1  # AdamW's moments came back
    sched.step()
    assert [g["lr"] for o in mixed.optimizers for g in o.param_groups] == [0.0025, 0.025]


def test_state_of_another_optimiser_is_a_clear_error():
    a, b = _two_layers()
    mixed = MixedOptimizer([torch.optim.AdamW(a.parameters()), torch.optim.SGD(b.parameters(), lr=0.1)])
    with pytest.raises(ValueError, match="selection_optimizer"):
        mixed.load_state_dict(torch.optim.SGD(a.parameters(), lr=0.1).state_dict())


def test_upper_stage_trains_the_selection_network_with_adamw_when_asked(tmp_path):
    model = build_ada3d(Ada3DConfig(arch="slow_tiny", num_classes=4, selection_width=0.35, policy_size=32))
    recipe = recipe_from_dict(tiny_recipe(tmp_path, tmp_path, optim={"selection_optimizer": "adamw",
                                                                    "selection_lr": 0.003}),
                              check_required=False)
    opt = make_optimizer(recipe, model, "upper")
    adamw, sgd = opt.optimizers
    assert isinstance(adamw, torch.optim.AdamW) and isinstance(sgd, torch.optim.SGD)
    assert {id(p) for p in adamw.param_groups[0]["params"]} == {id(p) for p in model.selection.parameters()}
    assert adamw.param_groups[0]["lr"] == 0.003
    assert isinstance(make_optimizer(recipe, model, "policy"), torch.optim.SGD)  # stage 0 only
    with pytest.raises(ValueError, match="selection_optimizer"):
        recipe_from_dict(tiny_recipe(tmp_path, tmp_path, optim={"selection_optimizer": "adam"}),
                         check_required=False)
