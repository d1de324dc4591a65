"""Per-configuration BatchNorm statistics: what they are, how they are measured, where they go."""
from __future__ import annotations

import copy

import pytest
import torch

from ada3d_edge.models import all_masks
from ada3d_edge.models.ada3d import Ada3DConfig, build_ada3d, load_ada3d_state
from ada3d_edge.models.backbone import build_backbone, is_config_bn_key
from ada3d_edge.models.layers import ConfigBatchNorm3d
from ada3d_edge.train.bn_calibration import calibrate_bn, is_calibrated

torch.set_num_threads(1)
T, CROP = 4, 32


def _batches(n=3, b=4, seed=0):
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(b, 3, T, CROP, CROP, generator=g) * 2 + 0.5 for _ in range(n)]


@pytest.fixture()
def backbone():
    torch.manual_seed(0)
    bb = build_backbone("slow_tiny", num_classes=5, num_frames=T, crop_size=CROP)
    with torch.no_grad():  # give the side taps weight so 3D and 2D activations really differ
        for m in bb.modules():
            if isinstance(m, torch.nn.Conv3d) and m.weight.shape[2] == 3:
                m.weight[:, :, 0] += 0.5 * m.weight[:, :, 1]
        for bn in bb.config_bns:
            bn.weight.uniform_(0.5, 1.5)
    return bb.eval()


def test_config_bn_uses_its_statistics_only_in_eval_with_an_active_configuration():
    bn = ConfigBatchNorm3d(3, num_configs=2)
    x = torch.randn(2, 3, 2, 4, 4) * 3 + 1
    with torch.no_grad():
        bn.config_mean[1] = torch.tensor([1.0, 2.0, 3.0])
        bn.config_var[1] = torch.tensor([4.0, 9.0, 16.0])
    bn.eval()
    shared = bn(x)
    assert torch.allclose(shared, x / (1 + bn.eps) ** 0.5, atol=1e-5)  # shared: mean 0, var 1
    bn.active = 1
    want = (x - bn.config_mean[1].view(1, 3, 1, 1, 1)) / (bn.config_var[1].view(1, 3, 1, 1, 1) + bn.eps).sqrt()
    assert torch.allclose(bn(x), want, atol=1e-5)
    bn.train()
    before = bn.running_mean.clone()
    assert torch.allclose(bn(x).mean((0, 2, 3, 4)), torch.zeros(3), atol=1e-5)  # batch statistics
    assert not torch.equal(before, bn.running_mean)


def test_calibration_equals_precise_bn_run_per_mask(backbone):
    batches = _batches()
    shared = [(bn.running_mean.clone(), bn.running_var.clone()) for bn in backbone.config_bns]
    seen = calibrate_bn(backbone, batches)
    assert seen == {m: 3 for m in all_masks(2)} and is_calibrated(backbone)
    assert not backbone.training  # modes restored
    for (mean, var), bn in zip(shared, backbone.config_bns):  # shared statistics untouched
        assert torch.equal(mean, bn.running_mean) and torch.equal(var, bn.running_var)
    x = _batches(1, 2, seed=1)[0]
    for mask in all_masks(2):
        ref = copy.deepcopy(backbone)
        ref.bn_calibrated.zero_()
        for bn in ref.config_bns:  # PySlowFast-style precise BN for this mask alone
            bn.reset_running_stats()
            bn.momentum = None
        ref.train()
        with torch.no_grad():
            for clip in batches:
                ref.forward_features(clip, mask)
        ref.eval()
        with torch.no_grad():
            assert torch.allclose(backbone(x, mask), ref(x, mask), atol=1e-4), mask


def test_degraded_configurations_get_other_statistics(backbone):
    calibrate_bn(backbone, _batches())
    bn = backbone.stages[2].blocks[0].bn_a  # after res4's temporal conv
    i11, i01 = backbone.mask_index(torch.tensor([1, 1])), backbone.mask_index(torch.tensor([0, 1]))
    assert (i11, i01) == (3, 1)
    assert not torch.allclose(bn.config_var[i11], bn.config_var[i01], rtol=0.05)
    stem = backbone.stem.bn  # in front of every degradable stage: the same for all masks
    assert torch.allclose(stem.config_mean[i11], stem.config_mean[i01], atol=1e-5)


def test_per_sample_masks_use_each_masks_statistics(backbone):
    calibrate_bn(backbone, _batches())
    x = _batches(1, 4, seed=2)[0]
    masks = torch.tensor([[1, 1], [0, 0], [0, 1], [0, 0]], dtype=torch.bool)
    with torch.no_grad():
        together = backbone(x, masks)
        alone = torch.cat([backbone(x[i:i + 1], masks[i]) for i in range(4)])
    assert torch.allclose(together, alone, atol=1e-5)


def test_frame_dropping_and_subset_of_masks(backbone):
    seen = calibrate_bn(backbone, _batches(), masks=["00"], frame_keep_prob=0.5)
    assert seen == {"00": 3}
    assert backbone.bn_calibrated.tolist() == [True, False, False, False] and not is_calibrated(backbone)
    with pytest.raises(ValueError, match="mask"):
        calibrate_bn(backbone, _batches(), masks=["0"])
    with pytest.raises(ValueError, match="no clips"):
        calibrate_bn(backbone, [])


def test_checkpoints_without_config_statistics_still_load():
    model = build_ada3d(Ada3DConfig(num_classes=4, num_frames=T, selection_width=0.35, policy_size=32))
    old = {k: v for k, v in model.state_dict().items()
           if not is_config_bn_key(k) and not k.startswith("selection.head_norm.")}
    fresh = build_ada3d(Ada3DConfig(num_classes=4, num_frames=T, selection_width=0.35, policy_size=32))
    load_ada3d_state(fresh, old)
    assert not fresh.backbone.bn_calibrated.any()
    assert torch.equal(fresh.selection.head_norm.running_var, torch.ones_like(fresh.selection.head_norm.running_var))
    with pytest.raises(RuntimeError, match="missing"):
        load_ada3d_state(fresh, {k: v for k, v in old.items() if "head" not in k})
