"""Selection network and Ada3D packing."""
import pytest
import torch

from ada3d_edge.models import Actions, Ada3DConfig, build_ada3d, greedy_actions, pack_frames, sample_actions
from ada3d_edge.models.selection import SelectionNet
from ada3d_edge.models.specs import SelectionSpec


def test_selection_shapes_and_range():
    net = SelectionNet(8, 2, num_classes=5, spec=SelectionSpec(width_mult=0.35)).eval()
    m, n = net(torch.randn(3, 3, 8, 112, 112))
    assert m.shape == (3, 8) and n.shape == (3, 2)
    assert ((m >= 0) & (m <= 1)).all() and ((n >= 0) & (n <= 1)).all()
    assert net.classify(torch.randn(2, 3, 8, 112, 112)).shape == (2, 5)
    with pytest.raises(ValueError, match="T=8"):
        net(torch.randn(1, 3, 4, 112, 112))


def test_greedy_keeps_at_least_one_frame_and_follows_threshold():
    m = torch.tensor([[0.1, 0.3, 0.2, 0.05], [0.9, 0.6, 0.4, 0.7]])
    n = torch.tensor([[0.2, 0.8], [0.55, 0.45]])
    a = greedy_actions(m, n, threshold=0.5)
    assert a.frames.tolist() == [[False, True, False, False], [True, True, False, True]]
    assert a.stages.tolist() == [[False, True], [True, False]]
    b = greedy_actions(m, n, threshold=0.65)
    assert b.frames.sum() < a.frames.sum() + 1 and b.frames[1].tolist() == [True, False, False, True]


def test_sampled_actions_log_prob_matches_bernoulli():
    torch.manual_seed(0)
    m = torch.rand(6, 8).clamp(0.05, 0.95).requires_grad_()
    n = torch.rand(6, 3).clamp(0.05, 0.95)
    a = sample_actions(m, n)
    assert a.frames.any(1).all()
    ref = torch.distributions.Bernoulli(probs=m).log_prob(a.frames.float()).sum(1)
    torch.testing.assert_close(a.log_prob_frames, ref)
    a.log_prob_frames.sum().backward()
    assert m.grad is not None


def test_pack_frames_keeps_order():
    clip = torch.arange(6).float().view(1, 6, 1, 1).expand(3, 6, 2, 2)
    out = pack_frames(clip, torch.tensor([0, 1, 0, 1, 1, 0]).bool())
    assert out[0, :, 0, 0].tolist() == [1, 3, 4]


def test_ada3d_forward_equals_backbone_on_packed_clip():
    model = build_ada3d(Ada3DConfig(arch="i3d_tiny", num_classes=4, selection_width=0.35)).eval()
    clip = torch.randn(4, 3, 8, 32, 32)
    frames = torch.tensor([[1, 0, 1, 1, 0, 0, 1, 0], [1] * 8, [0, 0, 0, 1, 0, 0, 0, 0], [1, 1, 0, 0, 1, 1, 0, 1]]).bool()
    stages = torch.tensor([[1, 0, 1, 0, 1], [1] * 5, [0] * 5, [0, 1, 1, 0, 0]]).bool()
    out = model(clip, Actions(frames, stages))
    for i in range(4):
        ref = model.backbone(pack_frames(clip[i], frames[i])[None], stages[i])
        torch.testing.assert_close(out[i:i + 1], ref, rtol=1e-4, atol=1e-5)


def test_ada3d_rejects_mismatched_actions():
    model = build_ada3d(Ada3DConfig(selection_width=0.35)).eval()
    with pytest.raises(ValueError, match="do not match"):
        model(torch.randn(2, 3, 8, 32, 32), Actions(torch.ones(2, 4).bool(), torch.ones(2, 2).bool()))


def test_heads_see_standardised_clip_features():
    torch.manual_seed(0)
    sel = SelectionNet(num_frames=4, num_stages=2, spec=SelectionSpec(width_mult=0.35, policy_size=32))
    seen = []
    sel.stage_head.register_forward_hook(lambda mod, inp, out: seen.append(inp[0]))
    sel.train()
    sel(torch.randn(8, 3, 4, 32, 32) + 2.0)
    feat = seen[-1]  # batch statistics in training: zero mean, unit variance per feature
    assert torch.allclose(feat.mean(0), torch.zeros(feat.shape[1]), atol=1e-4)
    live = feat.std(0) > 0.1  # features ReLU6 left at zero for the whole batch stay zero
    assert live.sum() > 100 and torch.allclose(feat.var(0, unbiased=False)[live], torch.ones(int(live.sum())), atol=1e-2)
    one = torch.randn(1, 3, 4, 32, 32)
    sel.features.eval()  # MobileNetV2 as in inference; the head norm still in training mode
    m1, n1 = sel(one)  # a batch of one clip in training (a last short batch) uses the running statistics
    sel.eval()
    m, n = sel(one)
    assert m.shape == (1, 4) and n.shape == (1, 2)
    assert torch.allclose(n1, n, atol=1e-5) and torch.allclose(m1, m, atol=1e-5)


def test_selection_depth_and_groups_make_a_lighter_network_with_matching_flops():
    from ada3d_edge.flops import selection_macs
    from ada3d_edge.models.specs import selection_spec, selection_spec_from_config

    full, shallow, short = selection_spec(0.35, 32), selection_spec(0.35, 32, depth=1), selection_spec(0.35, 32, 1, 4)
    assert [n for _, _, n, _ in full.settings] == [1, 2, 3, 4, 3, 3, 1]
    assert [n for _, _, n, _ in shallow.settings] == [1] * 7 and len(short.settings) == 4
    convs = lambda spec: sum(isinstance(m, torch.nn.Conv2d) for m in SelectionNet(8, 2, spec=spec).modules())
    assert convs(full) > convs(shallow) > convs(short)
    for spec in (shallow, short):  # fvcore checks the analytic counts in test_flops
        net = SelectionNet(8, 2, spec=spec).eval()
        m, n = net(torch.randn(2, 3, 8, 32, 32))
        assert m.shape == (2, 8) and n.shape == (2, 2)
        assert selection_macs(spec, frames=8, size=32) < selection_macs(full, frames=8, size=32)
    cfg = {"selection_width": 0.35, "policy_size": 32}
    assert selection_spec_from_config(cfg) == full  # checkpoints from before the knobs
    assert selection_spec_from_config({**cfg, "selection_depth": 1, "selection_groups": 4}) == short
    with pytest.raises(ValueError, match="groups must be in 1..7"):
        selection_spec(0.35, 32, groups=8)
    with pytest.raises(ValueError, match="depth must be >= 1"):
        selection_spec(0.35, 32, depth=0)
    narrow = selection_spec_from_config({**cfg, "selection_depth": 1, "selection_groups": 4,
                                         "selection_last_channels": 256})
    assert narrow.last_channels == 256 and SelectionNet(8, 2, spec=narrow).num_features == 256
    assert selection_macs(narrow, frames=8, size=32) < selection_macs(short, frames=8, size=32)
    with pytest.raises(ValueError, match="last_channels must be >= 8"):
        selection_spec(0.35, 32, last_channels=4)


def test_recipe_selection_knobs_reach_the_model_and_are_checked(tmp_path):
    from ada3d_edge.train.config import load_recipe

    r = load_recipe("train/demo.yaml", ["data.root=/tmp", "model.selection_groups=4"])
    assert r.model.selection_depth == 1 and r.model.selection_groups == 4 and r.model.selection_last_channels == 256
    model = build_ada3d(Ada3DConfig(selection_width=0.35, policy_size=32, selection_depth=1, selection_groups=4,
                                    selection_last_channels=256))
    assert len(model.selection.spec.settings) == 4 and model.config["selection_groups"] == 4
    assert model.selection.num_features == 256 and model.config["selection_last_channels"] == 256
    with pytest.raises(ValueError, match="selection_last_channels must be > 0"):
        load_recipe("train/demo.yaml", ["data.root=/tmp", "model.selection_last_channels=-1"])
    with pytest.raises(ValueError, match="selection_groups must be in 1..7"):
        load_recipe("train/demo.yaml", ["data.root=/tmp", "model.selection_groups=9"])
    with pytest.raises(ValueError, match="selection_depth must be > 0"):
        load_recipe("train/demo.yaml", ["data.root=/tmp", "model.selection_depth=0"])
