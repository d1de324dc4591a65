"""Rewards (Eq. 4), REINFORCE, baselines, random policies, metrics and recipe errors (no data)."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from ada3d_edge.models.selection import Actions, greedy_actions, sample_actions
from ada3d_edge.train.config import load_recipe, parse_random_policy, parse_set, recipe_from_dict, valid_keys
from ada3d_edge.train.metrics import mean_average_precision, top1
from ada3d_edge.train.rewards import (Baseline, expected_frames, frame_prob_for, is_correct, random_actions,
                                      reinforce_loss, rewards)

torch.set_num_threads(1)


def test_reward_eq4_both_heads():
    frames = torch.tensor([[1, 1, 0, 0], [1, 1, 1, 1], [1, 0, 0, 0]], dtype=torch.bool)
    stages = torch.tensor([[1, 0], [1, 1], [0, 0]], dtype=torch.bool)
    correct = torch.tensor([True, True, False])
    r_u, r_v = rewards(correct, Actions(frames, stages), gamma=0.7)
    assert r_u.tolist() == pytest.approx([1 - 2 / 4, 1 - 4 / 4, -0.7])   # O(u) = |u| / T
    assert r_v.tolist() == pytest.approx([1 - (1 / 2) ** 2, 1 - 1.0, -0.7])  # O(v) = (|v| / K)^2


def test_correct_single_and_multi_label():
    logits = torch.tensor([[0.1, 2.0, 0.3], [3.0, 0.0, 0.0]])
    assert is_correct(logits, torch.tensor([1, 2])).tolist() == [True, False]
    multi = torch.tensor([[0, 1, 1], [0, 1, 1]], dtype=torch.float)  # top-1 among the labels
    assert is_correct(logits, multi).tolist() == [True, False]


def test_reinforce_gradient_raises_the_probability_of_rewarded_actions():
    # one frame/stage logit each; the sampled action (keep) got a reward above the baseline
    logit = torch.zeros(1, 1, requires_grad=True)
    p = torch.sigmoid(logit)
    acts = Actions(torch.ones(1, 1, dtype=torch.bool), torch.ones(1, 1, dtype=torch.bool),
                   torch.log(p).sum(1), torch.log(p).sum(1))
    loss = reinforce_loss(acts, torch.tensor([1.0]), torch.tensor([1.0]), 0.0, 0.0)
    loss.backward()
    assert logit.grad.item() < 0  # gradient descent increases the logit: keep becomes more likely
    logit.grad = None
    p = torch.sigmoid(logit)
    acts = Actions(acts.frames, acts.stages, torch.log(p).sum(1), torch.log(p).sum(1))
    reinforce_loss(acts, torch.tensor([-1.0]), torch.tensor([-1.0]), 0.0, 0.0).backward()
    assert logit.grad.item() > 0  # punished: keep becomes less likely


def test_reinforce_on_toy_bandit_learns_to_drop_frames():
    torch.manual_seed(0)
    logits = torch.zeros(1, 4, requires_grad=True)
    opt = torch.optim.SGD([logits], lr=0.5)
    base = Baseline("batch_mean")
    for _ in range(100):  # always "correct": the reward is 1 - |u|/T, so fewer frames pay more
        m = torch.sigmoid(logits).expand(64, 4)
        acts = sample_actions(m, torch.full((64, 1), 0.5))
        r_u, r_v = rewards(torch.ones(64, dtype=torch.bool), acts, gamma=1.0)
        loss = reinforce_loss(acts, r_u, r_v, base("u", r_u), base("v", r_v))
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert torch.sigmoid(logits).max() < 0.4  # started at 0.5


def test_baselines():
    b = Baseline("moving_average", momentum=0.5)
    assert b("u", torch.tensor([1.0, 3.0])) == 2.0          # first batch: its own mean
    assert b("u", torch.tensor([4.0])) == 2.0               # then the average before this batch
    assert b.value["u"] == pytest.approx(3.0)
    assert Baseline("batch_mean")("v", torch.tensor([1.0, 2.0])) == 1.5
    with pytest.raises(ValueError, match="moving_average"):
        Baseline("median")
    assert Baseline("self_critical").per_clip
    with pytest.raises(ValueError, match="per clip"):
        Baseline("self_critical")("u", torch.tensor([1.0]))


def test_self_critical_baseline_is_the_greedy_actions_reward_per_clip():
    from ada3d_edge.models import Ada3DConfig, build_ada3d
    from ada3d_edge.train.stages import PolicyStep

    torch.manual_seed(0)
    model = build_ada3d(Ada3DConfig(num_classes=4, num_frames=4, selection_width=0.35, policy_size=32)).eval()
    clip, policy = torch.randn(6, 3, 4, 32, 32), torch.randn(6, 3, 4, 32, 32)
    labels = torch.tensor([0, 1, 2, 3, 0, 1])
    step = PolicyStep(model, gamma=1.0, baseline=Baseline("self_critical"), train_backbone=False)
    m, n = model.selection(policy)
    b_u, b_v = step.greedy_rewards(clip, m, n, labels)
    greedy = greedy_actions(m, n)
    want_u, want_v = rewards(is_correct(model(clip, greedy), labels), greedy, 1.0)
    assert b_u.shape == (6,) and torch.equal(b_u, want_u) and torch.equal(b_v, want_v)
    with torch.no_grad():  # a deterministic policy samples its greedy actions: no advantage, no loss
        model.selection.frame_head.bias.fill_(30.0)
        model.selection.stage_head.bias.fill_(-30.0)
    loss, stats = step(clip, policy, labels)
    assert abs(float(loss.detach())) < 1e-6 and float(stats["stages3d"]) == 0.0


def test_random_policy_matches_mean_usage():
    p = frame_prob_for(5.0, 8)
    assert expected_frames(p, 8) == pytest.approx(5.0)
    assert frame_prob_for(1.0, 8) < 1e-3 and frame_prob_for(8.0, 8) > 0.999
    g = torch.Generator().manual_seed(0)
    a = random_actions(4000, 8, 2, p, 0.25, generator=g)
    assert a.frames.any(1).all()
    assert a.frames.sum(1).float().mean().item() == pytest.approx(5.0, abs=0.1)
    assert a.stages.float().mean().item() == pytest.approx(0.25, abs=0.03)


def test_metrics():
    scores = np.array([[0.9, 0.1], [0.2, 0.8], [0.6, 0.4]])
    assert top1(scores, np.array([0, 1, 1])) == pytest.approx(200 / 3)
    targets = np.array([[1, 0], [0, 1], [1, 1]])
    # class 0: positives at ranks 1, 2 -> AP 1; class 1: ranks 1 (0.8), 2 (0.4) -> AP 1
    assert mean_average_precision(scores, targets) == pytest.approx(100.0)
    # each class's only positive ranked last of 3 -> AP 1/3
    assert mean_average_precision(scores, np.array([[0, 1], [1, 0], [0, 0]])) == pytest.approx(100 / 3)


def test_recipe_overrides_and_errors(tmp_path):
    base = {"data": {"root": str(tmp_path), "train_list": "a", "val_list": "b", "classes": "c",
                     "crop": 32, "short_side_range": [32, 40]}}
    r = recipe_from_dict(base, ["policy.gamma=0.3", "data.flip=false", "model.backbone.depths=[1,1,1,1]",
                                "optim.lr=1e-3", "gammas=[0.1,0.5]"])
    assert r.policy.gamma == 0.3 and r.data.flip is False and r.optim.lr == 1e-3
    assert r.model.backbone == {"depths": [1, 1, 1, 1]} and r.gammas == [0.1, 0.5]
    with pytest.raises(ValueError, match="unknown key 'policy.gama'.*policy.gamma"):
        parse_set(["policy.gama=1"])
    with pytest.raises(ValueError, match="key=value"):
        parse_set(["policy.gamma"])
    with pytest.raises(ValueError, match=r"missing required key\(s\) \['data.root', 'data.train_list'"):
        recipe_from_dict({})
    with pytest.raises(ValueError, match=r"unknown recipe key\(s\) \['optim.learning_rate'\].*optim.lr"):
        recipe_from_dict({**base, "optim": {"learning_rate": 0.1}})
    with pytest.raises(ValueError, match="policy.baseline='median'"):
        recipe_from_dict(base, ["policy.baseline=median"])
    with pytest.raises(ValueError, match="data.crop: 'big' is not a valid int"):
        recipe_from_dict(base, ["data.crop=big"])
    with pytest.raises(FileNotFoundError, match="recipe .* not found"):
        load_recipe(tmp_path / "nope.yaml")
    assert parse_random_policy("frames=0.6,stages=0.5") == {"frames": 0.6, "stages": 0.5}
    with pytest.raises(ValueError, match="frames=F,stages=S"):
        parse_random_policy("layers=0.5")
    assert "policy.gamma" in valid_keys() and "init_from.joint" in valid_keys()


@pytest.mark.parametrize("name", ["demo.yaml", "kinetics_slow_r50.yaml", "activitynet_slow_r50.yaml"])
def test_shipped_recipes_load(name):
    from pathlib import Path

    path = Path(__file__).resolve().parents[1] / "train" / name
    r = load_recipe(path, check_required=False)
    if name != "demo.yaml":  # the paper's settings (Sec. 4.1)
        assert (r.optim.lr, r.optim.batch_size, r.optim.schedule) == (0.01, 64, "cosine")
        assert (r.policy.lr, r.policy.batch_size, r.policy.epochs, r.joint.epochs) == (1e-4, 256, 40, 60)
        assert r.optim.momentum == 0.9 and not math.isnan(r.policy.gamma)


def test_default_recipe_model_and_data_agree():
    """A recipe that names no arch gets the full-size model its full-size data defaults are for."""
    from ada3d_edge.models.specs import get_spec
    from ada3d_edge.train.config import Recipe

    r = Recipe()
    spec = get_spec(r.model.arch, num_classes=400)
    assert (spec.crop_size, spec.num_frames, spec.sampling_stride) == (r.data.crop, r.data.num_frames, r.data.stride)
