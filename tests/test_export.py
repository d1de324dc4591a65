"""Export: a tiny checkpoint -> a verified format-2 bundle (policy, one backbone graph + weights file,
segment files, manifest)."""
from __future__ import annotations

import json
import os
import shutil
import signal
import stat
import subprocess
import sys
import time
from pathlib import Path

import onnx
import pytest
from click.testing import CliRunner

from ada3d_edge.bundle import add_trt_engines, open_bundle, sha256_file
from ada3d_edge.cli import main
from ada3d_edge.export import exporter, staging
from ada3d_edge.export.exporter import export_bundle
from ada3d_edge.export.onnx_export import expected_conv_ranks, export_backbone, onnx_conv_ranks
from ada3d_edge.export.verify import VerificationError, frame_counts
from ada3d_edge.flops import backbone_macs
from ada3d_edge.models import all_masks
from ada3d_edge.train.checkpoint import load_model
from export_helpers import CLASSES, MEAN, STD, make_checkpoint

T, CROP = 4, 32


@pytest.fixture(scope="module")
def slow_ckpt(tmp_path_factory) -> Path:
    return make_checkpoint(tmp_path_factory.mktemp("ckpt") / "slow.pt", "slow_tiny", T, CROP, threshold=0.4)


@pytest.fixture(scope="module")
def slow_bundle(slow_ckpt, tmp_path_factory) -> Path:
    return export_bundle(slow_ckpt, tmp_path_factory.mktemp("out") / "bundle", progress=False)


def config_conv_ranks(bundle, mask: str) -> dict:
    """Conv nodes by kernel rank over the segment files configuration ``mask`` chains."""
    counts: dict = {}
    for _, variant in bundle.segment_variants(mask):
        for rank, n in onnx_conv_ranks(bundle.root / variant.file).items():
            counts[rank] = counts.get(rank, 0) + n
    return counts


def _leftovers(parent: Path) -> list:
    return [p.name for p in parent.iterdir() if p.name.startswith(".")]


def test_manifest_content_and_files(slow_bundle, slow_ckpt):
    bundle = open_bundle(slow_bundle)  # checks format, files, sizes and every sha256
    m = bundle.manifest
    model, _ = load_model(slow_ckpt)
    spec = model.backbone.spec
    assert (m.arch, m.stages, m.num_frames, m.stride, m.crop_size, m.policy_size) == \
        ("slow_tiny", ["res4", "res5"], T, 2, CROP, 32)
    assert (m.classes, m.mean, m.std, m.threshold, m.multi_label) == (CLASSES, MEAN, STD, 0.4, False)
    assert sorted(bundle.masks) == sorted(all_masks(2))
    assert set(m.versions) >= {"ada3d_edge", "torch", "onnx", "onnxruntime", "opset"} and m.versions["opset"] == 17
    bb = m.backbone
    assert (bb.file, bb.weights.file, bb.layout) == ("backbone_shared.onnx", "backbone.weights", "shared-if")
    assert bb.sha256 == sha256_file(slow_bundle / bb.file)
    assert bb.weights.sha256 == sha256_file(slow_bundle / "backbone.weights")
    assert bb.ort_session.enable_mem_pattern is False
    local = m.layout_choice["local_weights"]  # segments holding their weights in their If branches
    assert local["budget"] == 0.1 and set(local["segments"]) <= {"stem", "res2", "res3", "res4", "res5"}
    assert bb.bn_per_config is True  # make_checkpoint calibrates BN per configuration (the recipes' default)
    assert all(v.inputs == (["x"] if seg.name == "head" else ["x", "stage_mask"])
               for seg in bb.segments for v in seg.variants)
    assert [s.name for s in bb.segments] == ["stem", "res2", "res3", "res4", "res5", "head"]
    for seg in bb.segments:
        assert len(seg.choice) == 4 and set(seg.choice) == set(range(len(seg.variants)))
        assert [v.file for v in seg.variants] == [f"{seg.name}_v{i}.onnx" for i in range(len(seg.variants))]
    degraded = {seg.name: [seg.variants[c].degraded for c in seg.choice] for seg in bb.segments}
    assert degraded["res4"] == [True, True, False, False] and degraded["res5"] == [True, False, True, False]
    for e in bb.configs:
        # exact for every T': convs per kept frame + the head once
        for t in range(1, T + 1):
            assert bundle.gflops(e.mask, t) == pytest.approx(backbone_macs(spec, e.mask, t, CROP) / 1e9, rel=1e-9)
    assert m.policy.sha256 == sha256_file(slow_bundle / "policy.onnx") and m.policy.gflops_per_frame > 0
    listed = {e.file for e in m.all_files()} | {"manifest.json"}
    assert {p.name for p in slow_bundle.iterdir()} == listed
    assert _leftovers(slow_bundle.parent) == []
    raw = json.loads((slow_bundle / "manifest.json").read_text())
    assert raw["format"] == "ada3d-bundle" and raw["channel_order"] == "RGB"


def test_onnx_io_names_and_dynamic_axes(slow_bundle):
    g = onnx.load(str(slow_bundle / "backbone_shared.onnx"), load_external_data=False).graph
    assert [i.name for i in g.input] == ["clip", "stage_mask"] and [o.name for o in g.output] == ["logits"]
    assert [d.dim_value for d in g.input[1].type.tensor_type.shape.dim] == [2]  # (K,) int64
    external = {init.name for init in g.initializer if init.data_location == onnx.TensorProto.EXTERNAL}
    assert external and all(e.value == "backbone.weights" for init in g.initializer
                            if init.name in external for e in init.external_data if e.key == "location")
    dims = g.input[0].type.tensor_type.shape.dim
    assert dims[0].dim_param and dims[2].dim_param and not dims[1].dim_param  # B, T' dynamic; C fixed
    p = onnx.load(str(slow_bundle / "policy.onnx")).graph
    assert [i.name for i in p.input] == ["frames"]
    assert [o.name for o in p.output] == ["frame_probs", "stage_probs"]
    assert p.input[0].type.tensor_type.shape.dim[0].dim_param


def test_policy_split_files_in_bundle(slow_bundle, slow_ckpt):
    split = open_bundle(slow_bundle).manifest.policy_split
    model, _ = load_model(slow_ckpt)
    assert (split.features.file, split.heads.file) == ("policy_features.onnx", "policy_heads.onnx")
    assert split.num_features == model.selection.num_frames + model.selection.num_stages
    assert split.features.sha256 == sha256_file(slow_bundle / "policy_features.onnx")
    f = onnx.load(str(slow_bundle / "policy_features.onnx")).graph
    h = onnx.load(str(slow_bundle / "policy_heads.onnx")).graph
    assert ([i.name for i in f.input], [o.name for o in f.output]) == (["frames"], ["features"])
    assert ([i.name for i in h.input], [o.name for o in h.output]) == (["features"], ["frame_probs", "stage_probs"])
    assert [d.dim_value for d in f.input[0].type.tensor_type.shape.dim][1:] == [3, 32, 32]  # (N, 3, P, P)
    assert f.input[0].type.tensor_type.shape.dim[0].dim_param and h.input[0].type.tensor_type.shape.dim[0].dim_param


# slow_tiny: stem (1 conv) + res2..res5 of one block each (conv_a, conv_b, conv_c, shortcut) = 17 convs;
# a 3D stage's conv_a is 3x1x1. Rank-3 Conv nodes expected per fold mode and mask:
RANK3 = {
    "auto": {"11": 17, "10": 13, "01": 13, "00": 0},  # 2D tail folded; 3D blocks and what precedes them not
    "all": {"11": 2, "10": 1, "01": 1, "00": 0},  # only the 3x1x1 convs stay 3D
    "degraded": {"11": 17, "10": 13, "01": 13, "00": 9},  # only degraded stages folded
    "none": {"11": 17, "10": 17, "01": 17, "00": 17},  # nothing folded: degraded stages as Conv3d(1, k, k)
}


def test_degraded_stages_are_2d_convs_in_graph(slow_bundle, slow_ckpt):
    model, _ = load_model(slow_ckpt)
    bundle = open_bundle(slow_bundle)
    for mask in all_masks(2):
        ranks = config_conv_ranks(bundle, mask)
        assert sum(ranks.values()) == 17 and ranks.get(3, 0) == RANK3["auto"][mask], (mask, ranks)
        assert ranks == {r: n for r, n in expected_conv_ranks(model.backbone, mask).items() if n}, mask


@pytest.mark.parametrize("mode", ["all", "degraded", "none"])
def test_fold_modes_in_graph(slow_ckpt, tmp_path, mode):
    model, _ = load_model(slow_ckpt)
    for mask in ("10", "00"):
        path = export_backbone(model.backbone, mask, tmp_path / f"{mask}.onnx", CROP, fold_frames=mode, num_frames=T)
        ranks = onnx_conv_ranks(path)
        assert ranks.get(3, 0) == RANK3[mode][mask] and ranks.get(2, 0) == 17 - RANK3[mode][mask], (mask, ranks)
    assert not any(getattr(c, "fold_frames", False) for c in model.backbone.modules())  # restored after export


def test_frame_counts():
    assert frame_counts(8) == [1, 4, 8] and frame_counts(4) == [1, 2, 4] and frame_counts(1) == [1]


def test_failed_verification_names_configuration(slow_ckpt, tmp_path, monkeypatch):
    from ada3d_edge.export import shared_graph

    real = shared_graph.save_backbone_files

    def wrong_variant_for_01(model, segments, out_dir, *args, **kwargs):
        info = real(model, segments, out_dir, *args, **kwargs)
        path = Path(out_dir) / info["graph"]
        graph = onnx.load(str(path), load_external_data=False)
        table = next(t for t in graph.graph.initializer if t.name == "res4/variant_table")
        choice = onnx.numpy_helper.to_array(table).copy()
        choice[1] = choice[3]  # configuration 01 runs res4's 3D variant: wrong from T' = 2 (T' = 1 sees the centre tap only)
        table.CopyFrom(onnx.numpy_helper.from_array(choice, table.name))
        onnx.save(graph, str(path))
        return info

    monkeypatch.setattr(shared_graph, "save_backbone_files", wrong_variant_for_01)
    out = tmp_path / "bad"
    with pytest.raises(VerificationError, match=r"configuration 01 .*T'=2, batch=1.*exceeds"):
        export_bundle(slow_ckpt, out, progress=False)
    assert not out.exists() and _leftovers(tmp_path) == []  # no half bundle


def _tree(root: Path) -> dict:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_overwrite_refusal_and_cli(slow_ckpt, tmp_path):
    out = tmp_path / "bundle"
    out.mkdir()
    (out / "junk.txt").write_text("keep me")
    with pytest.raises(FileExistsError, match="--overwrite"):
        export_bundle(slow_ckpt, out, verify=False, progress=False)
    runner = CliRunner()
    res = runner.invoke(main, ["export", str(slow_ckpt), "--out", str(out), "--no-verify", "--quiet"])
    assert res.exit_code == 2 and "--overwrite" in res.output
    assert (out / "junk.txt").read_text() == "keep me"
    res = runner.invoke(main, ["export", str(slow_ckpt), "--out", str(out), "--no-verify", "--quiet",
                               "--overwrite"])  # not a bundle: refused by name even with --overwrite
    assert res.exit_code == 2 and f"{out} is not an ada3d bundle" in res.output, res.output
    assert (out / "junk.txt").read_text() == "keep me"
    (out / "junk.txt").unlink()
    res = runner.invoke(main, ["export", str(slow_ckpt), "--out", str(out), "--no-verify", "--quiet"])
    assert res.exit_code == 0, res.output  # an empty directory is fine
    first = _tree(out)
    (out / "backbone_11.plan").write_bytes(b"PLAN")  # the bundle's own kind of file goes with it
    res = runner.invoke(main, ["export", str(slow_ckpt), "--out", str(out), "--no-verify", "--quiet",
                               "--overwrite"])
    assert res.exit_code == 0, res.output
    assert "not verified" in res.output and not (out / "backbone_11.plan").exists()
    assert _tree(out).keys() == first.keys()
    open_bundle(out)
    assert _leftovers(tmp_path) == []


@pytest.mark.parametrize("case", ["subfolder", "foreign_manifest", "bad_json"])
def test_overwrite_refuses_what_is_not_a_bundle(slow_bundle, slow_ckpt, tmp_path, case):
    out = tmp_path / "target"
    if case == "subfolder":  # a bundle with someone's files in a sub-folder: not ours to delete
        shutil.copytree(slow_bundle, out)
        (out / "notes").mkdir()
        (out / "notes" / "mine.txt").write_text("keep me")
    else:
        out.mkdir()
        (out / "data.csv").write_text("1,2\n")
        (out / "manifest.json").write_text('{"name": "another tool"}' if case == "foreign_manifest" else "{oops")
    before = _tree(out)
    with pytest.raises(FileExistsError, match=r"is not an ada3d bundle"):
        export_bundle(slow_ckpt, out, verify=False, overwrite=True, progress=False)
    assert _tree(out) == before and _leftovers(tmp_path) == []


@pytest.mark.slow
def test_i3d_all_32_configurations_verified(tmp_path):
    """K = 5: 32 configurations of one graph, each verified at T' in {1, 2, 4} x batch {1, 2}."""
    ckpt = make_checkpoint(tmp_path / "i3d.pt", "i3d_tiny", T, CROP)
    bundle = open_bundle(export_bundle(ckpt, tmp_path / "bundle", progress=False))
    assert bundle.manifest.stages == ["stem", "res2", "res3", "res4", "res5"]
    assert sorted(bundle.masks) == sorted(all_masks(5))
    model, _ = load_model(ckpt)
    for mask in bundle.masks:
        ranks = config_conv_ranks(bundle, mask)
        assert ranks == {r: n for r, n in expected_conv_ranks(model.backbone, mask).items() if n}, mask
    assert 3 not in config_conv_ranks(bundle, "00000")
    # mask 11111: res5's last block holds a 3x1x1 conv, so nothing is folded under "auto"
    assert 2 not in config_conv_ranks(bundle, "11111")
    # mask 11110: res5 degraded (2 blocks, 7 convs with the shortcut) and res4's last block (3x1x1 only
    # in its first block; 3 convs) form the 2D tail
    assert config_conv_ranks(bundle, "11110")[2] == 7 + 3
    # one weights file: on disk the bundle's backbone is far below 32 per-configuration files
    assert len(list(bundle.root.glob("*.weights"))) == 1


def _dead_pid() -> int:
    proc = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    return int(proc.stdout)


def test_stale_temp_dirs_of_the_target_are_cleared(slow_bundle, tmp_path):
    target, dead = tmp_path / "bundle", _dead_pid()
    me = os.getpid()
    stale = [tmp_path / f".bundle.tmp-{dead}-abc123", tmp_path / f".bundle.old-{dead}-x_9"]
    reused = tmp_path / f".bundle.tmp-{me}-reused"  # our pid, but made before this process started
    running = tmp_path / f".bundle.tmp-{me}-live"  # a live export's: kept
    others = [tmp_path / f".other.tmp-{dead}-abc", tmp_path / f".bundle.tmp-{dead}", tmp_path / ".bundle.tmp-k2j3h4"]
    for path in stale + [reused, running] + others:
        path.mkdir()
        (path / "policy.onnx").write_bytes(b"x")
    start = staging._process_start(me)
    assert start is not None  # Linux /proc
    os.utime(reused, (start - 3600, start - 3600))
    removed = staging.clear_stale_temp_dirs(target)
    assert sorted(removed) == sorted(stale + [reused])
    assert all(p.is_dir() for p in [running] + others) and not any(p.exists() for p in stale + [reused])
    # killed between the two renames of a swap: the previous bundle is put back, not deleted
    old = tmp_path / f".bundle.old-{dead}-swap"
    shutil.copytree(slow_bundle, old)
    assert staging.clear_stale_temp_dirs(target) == [] and open_bundle(target).root == target


def test_sigkilled_export_leftover_is_removed_by_the_next_export(slow_ckpt, tmp_path):
    out = tmp_path / "bundle"
    code = "import sys; from ada3d_edge.cli import main; sys.exit(main())"
    proc = subprocess.Popen([sys.executable, "-c", code, "export", str(slow_ckpt), "--out", str(out), "--quiet"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    while not any(tmp_path.glob(".bundle.tmp-*/policy.onnx")):
        assert proc.poll() is None and time.monotonic() < deadline, "export ended before it could be killed"
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert [p.name.split("-")[1] for p in tmp_path.glob(".bundle.tmp-*")] == [str(proc.pid)]
    export_bundle(slow_ckpt, out, verify=False, progress=False)
    assert _leftovers(tmp_path) == [] and open_bundle(out).root == out


@pytest.mark.parametrize("umask", [0o022, 0o027])
def test_bundle_modes_follow_the_umask(slow_ckpt, tmp_path, umask):
    old = os.umask(umask)
    try:
        out = export_bundle(slow_ckpt, tmp_path / "bundle", verify=False, progress=False)
        add_trt_engines(out, [])  # rewrites the manifest
    finally:
        os.umask(old)
    assert stat.S_IMODE(out.stat().st_mode) == 0o777 & ~umask
    modes = {p.name: stat.S_IMODE(p.stat().st_mode) for p in out.iterdir()}
    assert modes == {name: 0o666 & ~umask for name in modes} and "manifest.json" in modes
