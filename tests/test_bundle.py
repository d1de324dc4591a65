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
    assert bundle.engine_path("10") == bundle_dir / "backbone_10.onnx"
    assert bundle.gflops("11", 3) == pytest.approx(3.0 * 3)
    assert bundle.policy_gflops() == pytest.approx(0.01 * 4)
    assert bundle.policy_gflops(8) == pytest.approx(0.08)
    m = bundle.manifest
    assert m.format_version == FORMAT_VERSION and m.classes == ["a", "b", "c", "d", "e"]
    assert open_bundle(bundle_dir / MANIFEST_NAME).root == bundle_dir  # the manifest path works too
    data = json.loads((bundle_dir / MANIFEST_NAME).read_text())
    assert data["format"] == "ada3d-bundle" and data["engines"][0]["sha256"] == sha256_file(
        bundle_dir / data["engines"][0]["file"])


def test_bad_arguments(bundle_dir: Path) -> None:
    bundle = open_bundle(bundle_dir)
    with pytest.raises(ValueError, match="valid masks"):
        bundle.engine_path("111")
    with pytest.raises(ValueError, match="1..4"):
        bundle.gflops("11", 0)
    with pytest.raises(FileNotFoundError, match="no bundle manifest"):
        open_bundle(bundle_dir / "nowhere")


def test_tampered_file_refused(bundle_dir: Path) -> None:
    path = bundle_dir / "backbone_01.onnx"
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF  # same size, different content
    path.write_bytes(bytes(data))
    with pytest.raises(BundleError, match=r"backbone_01\.onnx: sha256 mismatch, expected [0-9a-f]{12}"):
        open_bundle(bundle_dir)
    open_bundle(bundle_dir, verify=False)  # hashes skipped on request


def test_truncated_file_refused(bundle_dir: Path) -> None:
    path = bundle_dir / "policy.onnx"
    size = path.stat().st_size
    path.write_bytes(path.read_bytes()[: size // 2])
    with pytest.raises(BundleError, match=rf"policy\.onnx: truncated: {size // 2} bytes, manifest says {size}"):
        open_bundle(bundle_dir, verify=False)  # size is checked even without hashing


def test_missing_file_refused(bundle_dir: Path) -> None:
    (bundle_dir / "backbone_11.onnx").unlink()
    with pytest.raises(BundleError, match=r"backbone_11\.onnx: missing"):
        open_bundle(bundle_dir)


@pytest.mark.parametrize("version, message", [
    (FORMAT_VERSION + 1, f"newer than this ada3d_edge reads \\(format_version {FORMAT_VERSION}\\)"),
    ("1", "unknown format_version '1'"),
    (0, "unknown format_version 0"),
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
    _edit_manifest(bundle_dir, engines=data["engines"][:3])
    with pytest.raises(BundleError, match=r"missing \['11'\]"):
        open_bundle(bundle_dir)
    _edit_manifest(bundle_dir, engines=[{**e, "file": "../" + e["file"]} for e in data["engines"]])
    with pytest.raises(BundleError, match="plain name"):
        open_bundle(bundle_dir)
    del data["classes"]
    (bundle_dir / MANIFEST_NAME).write_text(json.dumps(data))
    with pytest.raises(BundleError, match=r"missing key\(s\) \['classes'\]"):
        open_bundle(bundle_dir)
    (bundle_dir / MANIFEST_NAME).write_text("{ not json")
    with pytest.raises(BundleError, match="not valid JSON"):
        open_bundle(bundle_dir)


def test_add_trt_engines_atomic_and_replacing(bundle_dir: Path) -> None:
    plan = bundle_dir / "backbone_11.plan"
    plan.write_bytes(b"plan-v1")
    entry = TrtEngineEntry.for_file(bundle_dir, plan.name, mask="11", tensorrt_version="10.3.0",
                                    gpu_name="Orin", precision="fp16", max_batch=4)
    manifest = add_trt_engines(bundle_dir, [entry])
    assert [e.file for e in manifest.trt_engines] == ["backbone_11.plan"]
    plan.write_bytes(b"plan-v2")
    newer = TrtEngineEntry.for_file(bundle_dir, plan.name, mask="11", tensorrt_version="10.3.0",
                                    gpu_name="Orin", precision="fp16", max_batch=4)
    add_trt_engines(bundle_dir, [newer])
    bundle = open_bundle(bundle_dir)  # verifies the plan's new hash
    assert bundle.trt_engines("11") == [newer] and bundle.trt_engines("00") == []
    assert not [p for p in os.listdir(bundle_dir) if p.endswith(".tmp")]  # no temp file left behind
    bad = TrtEngineEntry(file="backbone_00.plan", sha256="0" * 64, mask="00")
    with pytest.raises(BundleError, match=r"backbone_00\.plan: missing"):
        add_trt_engines(bundle_dir, [bad])
    assert read_manifest(bundle_dir).trt_engines == [newer]  # manifest unchanged by the failed call


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
