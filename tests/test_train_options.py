"""Recipe options beyond the paper's defaults: policy.head_lr, policy.entropy_coef and
optim.random_policy_prob."""
import pytest
import torch

from ada3d_edge.models import Ada3DConfig, build_ada3d
from ada3d_edge.train.build import make_optimizer
from ada3d_edge.train.config import recipe_from_dict
from ada3d_edge.train.rewards import Baseline, bernoulli_entropy
from ada3d_edge.train.stages import PolicyStep, UpperStep
from train_helpers import tiny_recipe


def _recipe(tmp_path, **sections):
    return recipe_from_dict(tiny_recipe(tmp_path, tmp_path, **sections), check_required=False)


def test_head_lr_gives_the_policy_heads_their_own_rate(tmp_path):
    model = build_ada3d(Ada3DConfig(arch="slow_tiny", num_classes=4, selection_width=0.35, policy_size=32))
    heads = {id(p) for h in (model.selection.frame_head, model.selection.stage_head) for p in h.parameters()}
    for stage, lr in (("policy", 0.01), ("joint", 0.01)):
        opt = make_optimizer(_recipe(tmp_path, policy={"head_lr": 0.3}), model, stage)
        head_group = next(g for g in opt.param_groups if {id(p) for p in g["params"]} == heads)
        assert head_group["lr"] == 0.3
        assert all(g["lr"] == lr for g in opt.param_groups[:1])
    opt = make_optimizer(_recipe(tmp_path), model, "policy")  # default: the same rate
    assert {g["lr"] for g in opt.param_groups} == {0.01}


def test_upper_under_random_policies_runs_degraded_configurations():
    torch.manual_seed(0)
    model = build_ada3d(Ada3DConfig(arch="slow_tiny", num_classes=4, selection_width=0.35, policy_size=32)).eval()
    clip, policy = torch.randn(3, 3, 8, 32, 32), torch.randn(3, 3, 8, 32, 32)
    labels = torch.tensor([0, 1, 2])
    plain = {round(float(UpperStep(model)(clip, policy, labels)[1]["loss_backbone"]), 6) for _ in range(2)}
    assert len(plain) == 1  # prob 0: always the all-3D forward
    seen = set()
    for _ in range(8):
        loss, stats = UpperStep(model, random_policy_prob=1.0)(clip, policy, labels)
        seen.add(round(float(stats["loss_backbone"]), 6))
        assert torch.isfinite(loss)
    assert len(seen) > 1  # different random configurations, not the all-3D forward every time


def test_random_policy_prob_is_validated(tmp_path):
    with pytest.raises(ValueError, match="random_policy_prob"):
        _recipe(tmp_path, optim={"random_policy_prob": 1.5})


def test_bernoulli_entropy():
    p = torch.tensor([[0.5, 0.5], [1.0, 0.0]])
    assert torch.allclose(bernoulli_entropy(p), torch.tensor([2 * 0.693147, 0.0]), atol=1e-4)


def test_entropy_bonus_pulls_saturated_heads_back_towards_exploring(tmp_path):
    torch.manual_seed(0)
    model = build_ada3d(Ada3DConfig(arch="slow_tiny", num_classes=4, num_frames=4, selection_width=0.35, policy_size=32)).eval()
    with torch.no_grad():  # nearly saturated heads: keep everything
        model.selection.frame_head.bias.fill_(4.0)
        model.selection.stage_head.bias.fill_(4.0)
    clip, policy = torch.randn(4, 3, 4, 32, 32), torch.randn(4, 3, 4, 32, 32)
    labels = torch.tensor([0, 1, 2, 3])
    grads = {}
    for coef in (0.0, 0.5):
        model.zero_grad()
        torch.manual_seed(1)  # the same sampled actions for both
        step = PolicyStep(model, gamma=1.0, baseline=Baseline(), train_backbone=False, entropy_coef=coef)
        loss, stats = step(clip, policy, labels)
        loss.backward()
        grads[coef] = model.selection.stage_head.bias.grad.clone()
    p = torch.sigmoid(torch.tensor(4.0))
    assert abs(float(stats["entropy"]) - 6 * float(bernoulli_entropy(p.view(1, 1)))) < 0.01  # 4 + 2 units
    # the bonus adds coef * z * p * (1 - p) per unit: gradient descent lowers the bias towards p = 1/2
    bonus = grads[0.5] - grads[0.0]
    assert torch.allclose(bonus, torch.full_like(bonus, 0.5 * 4.0 * float(p * (1 - p))), rtol=0.05)
    with pytest.raises(ValueError, match="entropy_coef"):
        _recipe(tmp_path, policy={"entropy_coef": -1})
