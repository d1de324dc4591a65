"""Bundle manifest: write/read round trip, integrity checks, version refusal, TensorRT entries."""
from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from ada3d_edge.bundle import (FORMAT_VERSION, MANIFEST_NAME, Bundle, BundleError, TrtEngineEntry,
                               add_trt_engines, all_masks, open_bundle, read_manifest, sha256_file)
from fake_bundle import make_fake_bundle


@pytest.fixture()
def bundle_dir(tmp_path: Path) -> Path:
    return make_fake_bundle(tmp_path / "bundle")


def _edit_manifest(bundle_dir: Path, **changes) -> None:
    path = bundle_dir / MANIFEST_NAME
    data = json.loads(path.read_text())
    data.update(changes)
    path.write_text(json.dumps(data))


def test_open_round_trip(bundle_dir: Path) -> None:
    bundle = open_bundle(bundle_dir)
    assert isinstance(bundle, Bundle)
    assert bundle.masks == all_masks(2) == ["00", "01", "10", "11"]
    assert bundle.upper_mask == "11"
    assert bundle.backbone_path == bundle_dir / "backbone_shared.onnx"
    assert bundle.weights_path == bundle_dir / "backbone.weights"
    assert [(seg.name, v.file) for seg, v in bundle.segment_variants("10")] == [("net", "net_v2.onnx")]
    assert bundle.manifest.backbone.ort_session.enable_mem_pattern is False
    assert bundle.gflops("11", 3) == pytest.approx(3.0 * 3)
    assert bundle.policy_gflops() == pytest.approx(0.01 * 4)
    assert bundle.policy_gflops(8) == pytest.approx(0.08)
    m = bundle.manifest
    assert m.format_version == FORMAT_VERSION and m.classes == ["a", "b", "c", "d", "e"]
    assert open_bundle(bundle_dir / MANIFEST_NAME).root == bundle_dir  # the manifest path works too
    data = json.loads((bundle_dir / MANIFEST_NAME).read_text())
    bb = data["backbone"]
    assert data["format"] == "ada3d-bundle" and bb["sha256"] == sha256_file(bundle_dir / bb["file"])
    assert bb["weights"]["sha256"] == sha256_file(bundle_dir / "backbone.weights")
    assert bb["configs"][2] == {"mask": "10", "gflops_per_frame": 2.0, "head_gflops": 0.0}
    assert bb["segments"][0]["variants"][0]["sha256"] == sha256_file(bundle_dir / "net_v0.onnx")
    assert read_manifest(bundle_dir).to_dict() == data  # the JSON round trip is lossless


def test_bad_arguments(bundle_dir: Path) -> None:
    bundle = open_bundle(bundle_dir)
    with pytest.raises(ValueError, match="valid masks"):
        bundle.segment_variants("111")
    with pytest.raises(ValueError, match="valid masks"):
        bundle.engine("2")
    with pytest.raises(ValueError, match="1..4"):
        bundle.gflops("11", 0)
    with pytest.raises(FileNotFoundError, match="no bundle manifest"):
        open_bundle(bundle_dir / "nowhere")


@pytest.mark.parametrize("name", ["backbone_shared.onnx", "backbone.weights", "net_v1.onnx"])
def test_tampered_file_refused(bundle_dir: Path, name: str) -> None:
    path = bundle_dir / name
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF  # same size, different content
    path.write_bytes(bytes(data))
    with pytest.raises(BundleError, match=rf"{name.replace('.', '[.]')}: sha256 mismatch, expected [0-9a-f]{{12}}"):
        open_bundle(bundle_dir)
    open_bundle(bundle_dir, verify=False)  # hashes skipped on request


def test_truncated_file_refused(bundle_dir: Path) -> None:
    path = bundle_dir / "policy.onnx"
    size = path.stat().st_size
    path.write_bytes(path.read_bytes()[: size // 2])
    with pytest.raises(BundleError, match=rf"policy\.onnx: truncated: {size // 2} bytes, manifest says {size}"):
        open_bundle(bundle_dir, verify=False)  # size is checked even without hashing


def test_missing_file_refused(bundle_dir: Path) -> None:
    (bundle_dir / "backbone.weights").unlink()
    with pytest.raises(BundleError, match=r"backbone\.weights: missing"):
        open_bundle(bundle_dir)


@pytest.mark.parametrize("version, message", [
    (FORMAT_VERSION + 1, f"newer than this ada3d_edge reads \\(format_version {FORMAT_VERSION}\\)"),
    ("1", "unknown format_version '1'"),
    (0, "unknown format_version 0"),
    (1, r"format_version 1 bundle \(one backbone_<mask>\.onnx per configuration\) is no longer read.*"
        "re-export with this ada3d-edge"),
])
def test_format_version_refused(bundle_dir: Path, version, message: str) -> None:
    _edit_manifest(bundle_dir, format_version=version)
    with pytest.raises(BundleError, match=message):
        open_bundle(bundle_dir)


def test_manifest_content_checks(bundle_dir: Path) -> None:
    _edit_manifest(bundle_dir, format="something-else")
    with pytest.raises(BundleError, match="not an ada3d bundle"):
        open_bundle(bundle_dir)
    make_fake_bundle(bundle_dir)
    data = json.loads((bundle_dir / MANIFEST_NAME).read_text())
    bb = data["backbone"]
    _edit_manifest(bundle_dir, backbone={**bb, "configs": bb["configs"][:3]})
    with pytest.raises(BundleError, match=r"missing \['11'\]"):
        open_bundle(bundle_dir)
    _edit_manifest(bundle_dir, backbone={**bb, "weights": {**bb["weights"], "file": "../w"}})
    with pytest.raises(BundleError, match="plain name"):
        open_bundle(bundle_dir)
    seg = bb["segments"][0]
    for choice in ([0, 1, 2], [0, 1, 2, 4], [0, 1, 2, True]):
        _edit_manifest(bundle_dir, backbone={**bb, "segments": [{**seg, "choice": choice}]})
        with pytest.raises(BundleError, match=r"segment 'net' 'choice' must list, for each of the 4"):
            open_bundle(bundle_dir)
    _edit_manifest(bundle_dir, backbone={**bb, "layout": "per-config"})
    with pytest.raises(BundleError, match="backbone layout 'per-config' unknown"):
        open_bundle(bundle_dir)
    _edit_manifest(bundle_dir, backbone={k: v for k, v in bb.items() if k != "weights"})
    with pytest.raises(BundleError, match=r"backbone lacks \['weights'\]"):
        open_bundle(bundle_dir)
    _edit_manifest(bundle_dir, backbone={**bb, "ort_session": {"graph_optimization_level": "fast"}})
    with pytest.raises(BundleError, match="graph_optimization_level 'fast' unknown"):
        open_bundle(bundle_dir)
    del data["classes"]
    (bundle_dir / MANIFEST_NAME).write_text(json.dumps(data))
    with pytest.raises(BundleError, match=r"missing key\(s\) \['classes'\]"):
        open_bundle(bundle_dir)
    (bundle_dir / MANIFEST_NAME).write_text("{ not json")
    with pytest.raises(BundleError, match="not valid JSON"):
        open_bundle(bundle_dir)


def test_add_trt_engines_atomic_and_replacing(bundle_dir: Path) -> None:
    plan = bundle_dir / "net_v3.plan"
    plan.write_bytes(b"plan-v1")
    entry = TrtEngineEntry.for_file(bundle_dir, plan.name, model="segment", segment="net", variant=3,
                                    tensorrt_version="10.3.0", gpu_name="Orin", precision="fp16", max_batch=4)
    manifest = add_trt_engines(bundle_dir, [entry])
    assert [e.file for e in manifest.trt_engines] == ["net_v3.plan"] and entry.name == "net_v3"
    plan.write_bytes(b"plan-v2")
    newer = TrtEngineEntry.for_file(bundle_dir, plan.name, model="segment", segment="net", variant=3,
                                    tensorrt_version="10.3.0", gpu_name="Orin", precision="fp16", max_batch=4)
    add_trt_engines(bundle_dir, [newer])
    bundle = open_bundle(bundle_dir)  # verifies the plan's new hash
    assert bundle.trt_engines("net_v3") == [newer] and bundle.trt_engines("net_v0") == []
    assert not [p for p in os.listdir(bundle_dir) if p.endswith(".tmp")]  # no temp file left behind
    bad = TrtEngineEntry(file="net_v0.plan", sha256="0" * 64, segment="net", variant=0)
    with pytest.raises(BundleError, match=r"net_v0\.plan: missing"):
        add_trt_engines(bundle_dir, [bad])
    assert read_manifest(bundle_dir).trt_engines == [newer]  # manifest unchanged by the failed call


@pytest.mark.parametrize("fields, message", [
    ({"model": "backbone"}, r"has model 'backbone'; expected one of \['policy', 'segment'\]"),
    ({"segment": "res9", "variant": 0}, r"segment 'res9' variant 0, which the backbone does not have"),
    ({"segment": "net", "variant": 4}, r"segment 'net' variant 4"),
])
def test_trt_engine_entry_names_a_real_model(bundle_dir: Path, tmp_path: Path, fields, message) -> None:
    """Issue 12 item 7: what a plan holds is explicit (model, segment, variant), and checked."""
    import shutil

    out = Path(shutil.copytree(bundle_dir, tmp_path / "b"))
    (out / "x.plan").write_bytes(b"plan")
    with pytest.raises(BundleError, match=message):
        add_trt_engines(out, [TrtEngineEntry.for_file(out, "x.plan", **fields)])
    policy = TrtEngineEntry.for_file(out, "x.plan", model="policy")
    assert add_trt_engines(out, [policy]).trt_engines == [policy] and policy.name == "policy"


def test_one_masks_module_one_order():
    """Issue 12 item 5: masks live in ada3d_edge/masks.py (torch-free), listed in one order."""
    import ast

    from ada3d_edge import masks, models
    from ada3d_edge import bundle as bundle_mod

    assert masks.all_masks(3) == [format(i, "03b") for i in range(8)]  # numeric: index == int(mask, 2)
    assert models.all_masks is bundle_mod.all_masks is masks.all_masks
    assert models.mask_to_str is masks.mask_to_str and models.str_to_mask is masks.str_to_mask
    assert masks.mask_to_str([True, False, 1, 0]) == "1010" and masks.str_to_mask("01") == (0, 1)
    assert masks.upper_mask(3) == "111"
    with pytest.raises(ValueError, match="string of 0/1"):
        masks.str_to_mask("012")
    package = Path(masks.__file__).parent
    tree = ast.parse(Path(masks.__file__).read_text())
    assert not [n for n in ast.walk(tree) if isinstance(n, (ast.Import, ast.ImportFrom))
                and getattr(n, "module", None) not in ("__future__", "typing")]
    # the conversions are written once: no other module joins "1"/"0" per flag or defines all_masks
    for path in package.rglob("*.py"):
        if path.name == "masks.py":
            continue
        text = path.read_text()
        assert 'join("1" if' not in text and "def all_masks" not in text and "def mask_to_str" not in text, path
