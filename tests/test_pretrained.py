"""Checkpoint import: pytorchvideo and PySlowFast key schemes, mismatches listed, weights_only."""
import re

import pytest
import torch

from ada3d_edge.models.backbone import is_config_bn_key
from ada3d_edge.models import CheckpointMismatchError, build_ada3d, build_backbone, load_pretrained, Ada3DConfig


def _to_pytorchvideo(state, pool_block):
    out = {}
    for k, v in state.items():
        k2 = re.sub(r"^stem\.conv\.", "blocks.0.conv.", k)
        k2 = re.sub(r"^stem\.bn\.", "blocks.0.norm.", k2)
        m = re.match(r"stages\.(\d)\.blocks\.(\d+)\.(.+)$", k2)
        if m:
            s = int(m.group(1)) + 1
            if pool_block and s >= 2:
                s += 1
            rest = m.group(3)
            rest = re.sub(r"^shortcut\.conv\.", "branch1_conv.", rest)
            rest = re.sub(r"^shortcut\.bn\.", "branch1_norm.", rest)
            rest = re.sub(r"^(conv_[abc])\.", r"branch2.\1.", rest)
            rest = re.sub(r"^bn_([abc])\.", r"branch2.norm_\1.", rest)
            k2 = f"blocks.{s}.res_blocks.{m.group(2)}.{rest}"
        k2 = re.sub(r"^head\.proj\.", f"blocks.{6 if pool_block else 5}.proj.", k2)
        out[k2] = v
    return out


def _to_pyslowfast(state):
    out = {}
    for k, v in state.items():
        k2 = re.sub(r"^stem\.", "s1.pathway0_stem.", k)
        m = re.match(r"stages\.(\d)\.blocks\.(\d+)\.(.+)$", k2)
        if m:
            rest = m.group(3)
            rest = re.sub(r"^shortcut\.conv\.", "branch1.", rest)
            rest = re.sub(r"^shortcut\.bn\.", "branch1_bn.", rest)
            rest = re.sub(r"^conv_([abc])\.", r"branch2.\1.", rest)
            rest = re.sub(r"^bn_([abc])\.", r"branch2.\1_bn.", rest)
            k2 = f"s{int(m.group(1)) + 2}.pathway0_res{m.group(2)}.{rest}"
        k2 = re.sub(r"^head\.proj\.", "head.projection.", k2)
        if not k2.endswith("num_batches_tracked"):
            out["model." + k2] = v
    return out


def _randomised(arch, classes=6, **kw):
    model = build_backbone(arch, num_classes=classes, **kw)
    with torch.no_grad():
        for p in model.state_dict().values():
            if p.is_floating_point():
                p.copy_(torch.randn_like(p))
    return model


def _well_scaled(model, seed=0):
    """Random weights that keep activations finite through 16 blocks (BN variances > 0), eval mode."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for k, p in model.state_dict().items():
            if re.search(r"(running_var|bn(_[abc])?\.weight)$", k):
                p.copy_(torch.rand(p.shape, generator=g) + 0.5)
            elif p.is_floating_point() and p.dim() == 1 and not is_config_bn_key(k):
                p.copy_(torch.randn(p.shape, generator=g) * 0.1)
            elif p.dim() >= 2:
                p.copy_(torch.randn(p.shape, generator=g) * (2.0 / p[0].numel()) ** 0.5)
    return model.eval()


@pytest.mark.parametrize("scheme", ["pytorchvideo", "pyslowfast"])
@pytest.mark.parametrize("arch,pool", [("slow_r50", False), ("i3d_r50", False), ("i3d_r50", True)])
def test_full_depth_checkpoint_forward_matches_the_source_model(tmp_path, scheme, arch, pool):
    """R50 block counts (3,4,6,3: every key of the real files; I3D's alternating kernels), thin widths."""
    thin = dict(num_classes=400, widths=(8, 16, 32, 64), stem_width=8, temporal_pool=pool)
    src = _well_scaled(build_backbone(arch, **thin))
    state = _to_pytorchvideo(src.state_dict(), pool) if scheme == "pytorchvideo" else _to_pyslowfast(src.state_dict())
    path = tmp_path / "ckpt.pyth"
    ckpt = {"model_state": state, "epoch": 196}
    if scheme == "pyslowfast" and (pool or arch == "slow_r50"):  # its i3d always pools: no config here
        ckpt["cfg"] = f"MODEL:\n  ARCH: {arch[:-4]}\n  NUM_CLASSES: 400\n"
    torch.save(ckpt, path)
    dst = build_backbone(arch, **thin).eval()
    info = load_pretrained(dst, path)
    assert info["source"] == scheme
    if "cfg" in ckpt or scheme == "pytorchvideo":
        assert info["notes"] == []
    else:
        assert "temporal pooling was not checked" in info["notes"][0]
    clip = torch.randn(2, 3, 8, 32, 32, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        assert (dst(clip) - src(clip)).abs().max().item() <= 1e-5
        assert (dst.forward_features(clip) - src.forward_features(clip)).abs().max().item() <= 1e-5


def test_temporal_pool_of_the_file_must_match(tmp_path):
    """pytorchvideo's I3D shows its pool as a gap in the block numbers; PySlowFast's i3d pools (its cfg)."""
    src = _randomised("i3d_tiny", temporal_pool=True)
    pv, sf = tmp_path / "I3D_8x8_R50.pyth", tmp_path / "i3d.pyth"
    torch.save({"model_state": _to_pytorchvideo(src.state_dict(), True)}, pv)
    torch.save({"model_state": _to_pyslowfast(src.state_dict()), "cfg": "MODEL:\n  ARCH: i3d\n"}, sf)
    for path, what in ((pv, r"stage blocks \[1, 3, 4, 5\]"), (sf, "MODEL.ARCH=i3d")):
        with pytest.raises(CheckpointMismatchError, match=what + ": a temporal max-pool .*temporal_pool: true"):
            load_pretrained(build_backbone("i3d_tiny", num_classes=6), path)
        load_pretrained(build_backbone("i3d_tiny", num_classes=6, temporal_pool=True), path)
    with pytest.raises(CheckpointMismatchError, match=r"stage blocks \[1, 2, 3, 4\]: no temporal max-pool"):
        load_pretrained(build_backbone("i3d_tiny", num_classes=6, temporal_pool=True), _save_pv(tmp_path, src))


def _save_pv(tmp_path, model):
    path = tmp_path / "no_pool.pyth"
    torch.save({"model_state": _to_pytorchvideo(model.state_dict(), False)}, path)
    return path


@pytest.mark.parametrize("arch,pool", [("slow_tiny", False), ("i3d_tiny", True)])
def test_pytorchvideo_checkpoint(tmp_path, arch, pool):
    src = _randomised(arch, temporal_pool=pool)
    path = tmp_path / "SLOW_8x8_R50.pyth"
    torch.save({"model_state": _to_pytorchvideo(src.state_dict(), pool)}, path)
    dst = build_backbone(arch, num_classes=6, temporal_pool=pool)
    load_pretrained(dst, path)
    for k, v in src.state_dict().items():
        if not is_config_bn_key(k):
            torch.testing.assert_close(dst.state_dict()[k], v)
    assert not dst.bn_calibrated.any()  # imported weights start without per-configuration statistics


@pytest.mark.parametrize("arch", ["slow_tiny", "i3d_tiny"])
def test_pyslowfast_checkpoint_into_ada3d(tmp_path, arch):
    src = _randomised(arch)
    path = tmp_path / "ckpt.pyth"
    torch.save({"model_state": _to_pyslowfast(src.state_dict()), "epoch": 3}, path)
    model = build_ada3d(Ada3DConfig(arch=arch, num_classes=6, selection_width=0.35))
    load_pretrained(model, path)
    for k, v in src.state_dict().items():
        if not k.endswith("num_batches_tracked") and not is_config_bn_key(k):
            torch.testing.assert_close(model.backbone.state_dict()[k], v)


def test_mismatches_are_listed(tmp_path):
    state = _to_pyslowfast(_randomised("slow_tiny").state_dict())
    state.pop("model.s2.pathway0_res0.branch2.a.weight")
    state["model.s9.extra.weight"] = torch.zeros(1)
    path = tmp_path / "bad.pyth"
    torch.save({"model_state": state}, path)
    with pytest.raises(CheckpointMismatchError) as e:
        load_pretrained(build_backbone("slow_tiny", num_classes=6), path)
    msg = str(e.value)
    assert "missing (1): stages.0.blocks.0.conv_a.weight" in msg and "unexpected (1): s9.extra.weight" in msg


def test_wrong_temporal_kernels_are_listed(tmp_path):
    path = tmp_path / "i3d.pyth"
    torch.save({"model_state": _randomised("slow_tiny").state_dict()}, path)
    other = build_backbone("slow_tiny", num_classes=6, stem_kernel_t=5)
    with pytest.raises(CheckpointMismatchError, match=r"shape mismatch \(1\): stem.conv.weight") as e:
        load_pretrained(other, path)
    assert "temporal kernels (1): stem.conv: file has kt=1, slow_tiny expects 5" in str(e.value)


@pytest.mark.parametrize("scheme", ["pytorchvideo", "pyslowfast"])
def test_other_arch_is_refused_with_the_kernels_named_in_the_file_s_terms(tmp_path, scheme):
    thin = dict(num_classes=400, widths=(8, 16, 32, 64), stem_width=8)
    src = build_backbone("i3d_r50", **thin).state_dict()
    path = tmp_path / "i3d.pyth"
    torch.save({"model_state": _to_pytorchvideo(src, False) if scheme == "pytorchvideo" else _to_pyslowfast(src)}, path)
    with pytest.raises(CheckpointMismatchError) as e:
        load_pretrained(build_backbone("slow_r50", **thin), path)
    first = {"pytorchvideo": "blocks.1.res_blocks.0.branch2.conv_a", "pyslowfast": "s2.pathway0_res0.branch2.a"}
    assert f"{first[scheme]}: file has kt=3, slow_r50 expects 1" in str(e.value)
    assert "The file's temporal kernels are those of i3d_r50" in str(e.value)


def test_head_with_other_class_count_only_reset_when_asked(tmp_path):
    path = tmp_path / "k400.pyth"
    src = _randomised("slow_tiny", classes=400)
    torch.save({"model_state": _to_pytorchvideo(src.state_dict(), False)}, path)
    dst = build_backbone("slow_tiny", num_classes=6)
    with pytest.raises(CheckpointMismatchError, match="reset_head=True"):
        load_pretrained(dst, path)
    head_before = dst.head.proj.weight.clone()
    skipped = load_pretrained(dst, path, reset_head=True)
    assert skipped["reset_head"] == ["head.proj.weight", "head.proj.bias"]
    torch.testing.assert_close(dst.head.proj.weight, head_before)
    torch.testing.assert_close(dst.stem.conv.weight, src.stem.conv.weight)


class _Evil:
    def __reduce__(self):
        return (print, ("pickled code ran",))


def test_weights_only_and_missing_files(tmp_path):
    path = tmp_path / "evil.pyth"
    torch.save({"model_state": {"x": torch.zeros(1)}, "obj": _Evil()}, path)
    with pytest.raises(ValueError, match="weights_only=True"):
        load_pretrained(build_backbone("slow_tiny"), path)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_pretrained(build_backbone("slow_tiny"), tmp_path / "none.pyth")
