"""Backbones: every registered arch x stage mask x T'; degrade = centre tap; per-sample masks."""
import pytest
import torch
import torch.nn.functional as F

from ada3d_edge.models import all_masks, build_backbone, get_spec, list_archs, set_fold_frames
from ada3d_edge.models.layers import TemporalConv

torch.manual_seed(0)
# Every registered arch: the small ones (narrow stems) run every mask and frame count; full-size
# ones a single forward each, so a newly registered arch is covered without editing this file.
SMALL = [a for a in list_archs() if get_spec(a).stem_width < 64]
FULL_SIZE = [a for a in list_archs() if a not in SMALL]


def _randomise_bn(model):
    """Non-trivial BN statistics so equivalence tests cannot pass by accident."""
    g = torch.Generator().manual_seed(1)
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm3d):
            m.running_mean.copy_(torch.randn(m.num_features, generator=g) * 0.1)
            m.running_var.copy_(torch.rand(m.num_features, generator=g) + 0.5)
            m.weight.data.copy_(torch.rand(m.num_features, generator=g) + 0.5)
    return model.eval()


def test_registry_has_the_paper_archs():
    assert {"slow_r50", "i3d_r50", "slow_tiny", "i3d_tiny"} <= set(list_archs())
    assert get_spec("slow_r50").degradable == ("res4", "res5")
    assert get_spec("i3d_r50").degradable == ("stem", "res2", "res3", "res4", "res5")


@pytest.mark.parametrize("arch", SMALL)
def test_every_mask_and_frame_count(arch):
    model = _randomise_bn(build_backbone(arch, num_classes=5))
    k = model.num_stages_3d
    for mask in all_masks(k):
        for t in (1, 3, 8):
            out = model(torch.randn(2, 3, t, 32, 32), mask)
            assert out.shape == (2, 5) and torch.isfinite(out).all()


@pytest.mark.parametrize("arch", FULL_SIZE)
def test_full_size_single_forward(arch):
    model = build_backbone(arch, num_classes=400).eval()
    with torch.no_grad():
        out = model(torch.randn(1, 3, 2, 64, 64), "0" * model.num_stages_3d)
    assert out.shape == (1, 400)
    assert model.num_features == 2048


def test_i3d_temporal_pool_handles_one_frame():
    model = _randomise_bn(build_backbone("i3d_tiny", num_classes=3, temporal_pool=True))
    for t in (1, 2, 5, 8):
        assert model(torch.randn(1, 3, t, 32, 32)).shape == (1, 3)


def test_degrade_is_the_centre_tap_as_per_frame_2d_conv():
    conv = TemporalConv(4, 6, kernel_t=3, kernel_s=3, stride_s=2)
    x = torch.randn(2, 4, 5, 9, 9)
    y = conv(x, degrade=True)
    w2d = conv.weight[:, :, 1]  # centre tap
    ref = torch.stack([F.conv2d(x[:, :, t], w2d, stride=2, padding=1) for t in range(5)], dim=2)
    torch.testing.assert_close(y, ref)
    assert not torch.allclose(conv(x, degrade=False), y)


@pytest.mark.parametrize("arch", SMALL)
def test_degraded_stage_equals_sliced_kernels_run_as_2d(arch):
    """A model with stage s degraded == the same model with s's kernels sliced to kt=1 and run 3D."""
    model = _randomise_bn(build_backbone(arch, num_classes=4))
    names = model.stage_names
    x = torch.randn(2, 3, 6, 32, 32)
    for i, name in enumerate(names):
        mask = "".join("0" if j == i else "1" for j in range(len(names)))
        sliced = _randomise_bn(build_backbone(arch, num_classes=4))
        sliced.load_state_dict(model.state_dict())
        part = sliced.stem if name == "stem" else next(s for s in sliced.stages if s.name == name)
        for m in part.modules():
            if isinstance(m, TemporalConv) and m.weight.shape[2] > 1:
                kt = m.weight.shape[2]
                m.weight = torch.nn.Parameter(m.weight.data[:, :, kt // 2: kt // 2 + 1].clone())
                m.padding = (0,) + tuple(m.padding[1:])
        torch.testing.assert_close(model(x, mask), sliced(x), rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("arch", SMALL)
def test_fold_frames_is_the_same_function(arch):
    model = _randomise_bn(build_backbone(arch, num_classes=4))
    x = torch.randn(2, 3, 5, 32, 32)
    refs = {m: model(x, m) for m in all_masks(model.num_stages_3d)}
    set_fold_frames(model, True)
    for m, ref in refs.items():
        torch.testing.assert_close(model(x, m), ref, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("arch", SMALL)
def test_per_sample_masks_equal_per_sample_runs(arch):
    model = _randomise_bn(build_backbone(arch, num_classes=4))
    k = model.num_stages_3d
    masks = torch.tensor([[int(c) for c in m] for m in all_masks(k)[:4]])
    x = torch.randn(4, 3, 4, 32, 32)
    batched = model(x, masks)
    for i in range(4):
        torch.testing.assert_close(batched[i:i + 1], model(x[i:i + 1], masks[i]), rtol=1e-4, atol=1e-5)


def test_bad_inputs_are_clear_errors():
    model = build_backbone("slow_tiny", num_classes=4).eval()
    with pytest.raises(ValueError, match="2 characters"):
        model(torch.randn(1, 3, 4, 32, 32), "111")
    with pytest.raises(ValueError, match=r"\(B, 3, T', H, W\)"):
        model(torch.randn(1, 4, 32, 32))
    with pytest.raises(ValueError, match="does not fit"):
        model(torch.randn(2, 3, 4, 32, 32), torch.ones(3, 2))
    with pytest.raises(ValueError, match="unknown backbone option"):
        build_backbone("slow_tiny", bogus=1)
