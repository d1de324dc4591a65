"""FLOPs: the published figures come from code, and fvcore agrees on the small models."""
import json

import pytest
import torch
from click.testing import CliRunner

from ada3d_edge.cli import main
from ada3d_edge.flops import backbone_macs, cost_table, gflops, selection_macs
from ada3d_edge.models import all_masks, build_backbone, get_spec, set_fold_frames
from ada3d_edge.models.selection import SelectionNet
from ada3d_edge.models.specs import SelectionSpec


@pytest.mark.parametrize("arch,frames,crop,mask,expected", [
    ("slow_r50", 8, 256, None, 54.52),
    ("slow_r50", 16, 256, None, 109.04),
    ("i3d_r50", 8, 256, None, 58.65),
    ("i3d_r50", 16, 256, None, 117.29),
    ("slow_r50", 8, 224, None, 41.74),
    ("slow_r50", 8, 224, "00", 32.70),
])
def test_published_figures(arch, frames, crop, mask, expected):
    assert round(gflops(arch, mask, frames, crop), 2) == expected


def test_i3d_temporal_pool_variant():
    assert round(gflops(get_spec("i3d_r50", temporal_pool=True), None, 8, 256), 2) == 37.10


def test_selection_network_per_frame():
    assert round(selection_macs(SelectionSpec(), frames=1, classifier_classes=1000) / 1e9, 3) == 0.082
    feat = selection_macs(SelectionSpec(), frames=1) / 1e9
    assert 0.080 < feat < 0.082
    # heads once per clip: 1280 * (T + K)
    assert selection_macs(frames=8, num_stages=2, num_frames_out=8) - selection_macs(frames=8) == 1280 * 10


def test_cost_is_linear_in_frames_and_monotone_in_masks():
    spec = get_spec("i3d_r50")
    for m in all_masks(spec.num_stages_3d):
        assert backbone_macs(spec, m, 6, 224) == pytest.approx(6 * backbone_macs(spec, m, 1, 224) - 5 * spec.num_features * spec.num_classes)
    assert backbone_macs(spec, "00000") < backbone_macs(spec, "01111") < backbone_macs(spec, "11111")


def test_cost_table_covers_every_mask_and_frame_count():
    spec = get_spec("slow_r50")
    rows = cost_table(spec, 8, 224)
    assert len(rows) == 4 * 8
    assert rows[0].mask == "11" and rows[0].frames == 8 and rows[0].ratio == 1.0
    assert min(r.ratio for r in rows) == pytest.approx(
        backbone_macs(spec, "00", 1, 224) / backbone_macs(spec, "11", 8, 224))


def test_bad_mask_is_a_clear_error():
    with pytest.raises(ValueError, match="2 degradable stages"):
        gflops("slow_r50", "101")
    with pytest.raises(ValueError, match="registered"):
        gflops("resnet_nope")


def _fvcore_conv_linear(model, *inputs):
    fvcore = pytest.importorskip("fvcore.nn")
    counter = fvcore.FlopCountAnalysis(model, inputs)
    counter.unsupported_ops_warnings(False).uncalled_modules_warnings(False)
    by_op = counter.by_operator()
    return sum(v for k, v in by_op.items() if k in ("conv", "linear", "addmm", "matmul"))


class _Masked(torch.nn.Module):
    def __init__(self, backbone, mask):
        super().__init__()
        self.backbone, self.mask = backbone, mask

    def forward(self, x):
        return self.backbone(x, self.mask)


@pytest.mark.parametrize("arch", ["slow_tiny", "i3d_tiny"])
@pytest.mark.parametrize("fold", [False, True])
def test_fvcore_agrees_on_small_models(arch, fold):
    spec = get_spec(arch)
    model = build_backbone(arch, num_classes=spec.num_classes).eval()
    set_fold_frames(model, fold)
    k = spec.num_stages_3d
    for mask, frames in [("1" * k, 8), ("0" * k, 8), (all_masks(k)[1], 5), (all_masks(k)[-2], 1), ("1" * k, 3)]:
        x = torch.randn(1, 3, frames, 48, 48)
        assert _fvcore_conv_linear(_Masked(model, mask), x) == backbone_macs(spec, mask, frames, 48), (mask, frames)


@pytest.mark.parametrize("depth,groups,size", [(None, None, 112), (1, None, 32), (1, 4, 32)])
def test_fvcore_agrees_on_selection_network(depth, groups, size):
    from ada3d_edge.models.specs import selection_spec

    spec = selection_spec(0.5, size, depth, groups)
    net = SelectionNet(num_frames=4, num_stages=2, spec=spec).eval()
    x = torch.randn(1, 3, 4, size, size)
    assert _fvcore_conv_linear(net, x) == selection_macs(spec, frames=4, num_stages=2, num_frames_out=4)


def test_cli_flops_table_and_json():
    runner = CliRunner()
    res = runner.invoke(main, ["flops", "slow_r50", "--frames", "8", "--crop", "256"])
    assert res.exit_code == 0, res.output
    assert "54.52" in res.output and "1.000" in res.output
    res = runner.invoke(main, ["flops", "i3d_r50", "--json"])
    data = json.loads(res.output)
    assert len(data["rows"]) == 32 * 8 and data["stages"] == ["stem", "res2", "res3", "res4", "res5"]
    res = runner.invoke(main, ["flops", "nope"])
    assert res.exit_code != 0 and "registered" in res.output


@pytest.mark.parametrize("arch,upper,paper,masks", [("slow_r50", "109.04", 109.1, 4), ("i3d_r50", "117.29", 117.3, 32)])
def test_cli_flops_at_16_frames_gives_the_papers_figures(arch, upper, paper, masks):
    """The 16-frame rows of the paper's Table 1 (i3d_r50) and Table 4 (slow_r50), at the 256 test crop."""
    res = CliRunner().invoke(main, ["flops", arch, "--frames", "16", "--crop", "256"])
    assert res.exit_code == 0, res.output
    assert f"Upper (all 3D, 16 frames): {upper} GFLOPs" in res.output
    data = json.loads(CliRunner().invoke(main, ["flops", arch, "--frames", "16", "--crop", "256", "--json"]).output)
    assert data["frames"] == 16 and len(data["rows"]) == masks * 16
    assert {r["frames"] for r in data["rows"]} == set(range(1, 17))
    assert abs(data["upper_gflops"] - paper) < 0.1  # the paper rounds to one decimal
