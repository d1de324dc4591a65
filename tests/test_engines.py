"""TensorRT engine building, without TensorRT: the missing-package error, profiles, shape profiles,
calibration data, and the builder's call sequence against a fake ``tensorrt`` module."""
from __future__ import annotations

import sys
import types
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from ada3d_edge import preprocess
from ada3d_edge.bundle import open_bundle
from ada3d_edge.cli import main
from ada3d_edge.export import tensorrt as trt_export
from ada3d_edge.export.calibration import calibration_batches
from ada3d_edge.export.profiles import EngineProfile, load_profile, shape_profiles
from fake_bundle import make_fake_bundle

PROFILES = Path(__file__).resolve().parents[1] / "export"


@pytest.fixture
def no_tensorrt(monkeypatch):
    monkeypatch.setitem(sys.modules, "tensorrt", None)  # `import tensorrt` raises ImportError


def test_missing_tensorrt_is_a_clear_error(no_tensorrt, tmp_path):
    with pytest.raises(ImportError, match=r"pip install ada3d-edge\[trt\]"):
        trt_export.require_tensorrt()
    bundle = make_fake_bundle(tmp_path / "b")
    res = CliRunner().invoke(main, ["build-engines", str(bundle), "--fp16"])
    assert res.exit_code == 1
    assert "ada3d-edge[trt]" in res.output and "JetPack" in res.output


@pytest.mark.parametrize("path", sorted(PROFILES.glob("*.yaml")), ids=lambda p: p.stem)
def test_shipped_profiles_parse(path):
    profile = load_profile(path)
    assert profile.name == path.stem
    assert profile.precision in ("fp16", "int8") and profile.opt_batch <= profile.max_batch


def test_shipped_profile_set():
    assert {p.stem for p in PROFILES.glob("*.yaml")} >= {
        "jetson-orin-nano-fp16", "jetson-agx-orin-fp16", "jetson-orin-nano-int8", "desktop-gpu-fp16"}


@pytest.mark.parametrize("text, message", [
    ("precision: fp8\n", "precision 'fp8' unknown"),
    ("precision: fp16\nbatch: 2\n", "unknown field"),
    ("max_batch: 2\nopt_batch: 4\n", "opt_batch 4 exceeds max_batch 2"),
    ("workspace_mb: 0\n", "workspace_mb must be a positive integer"),
    ("- fp16\n", "expected a mapping"),
])
def test_bad_profiles(tmp_path, text, message):
    path = tmp_path / "p.yaml"
    path.write_text(text)
    with pytest.raises(ValueError, match=message):
        load_profile(path)


def test_overrides():
    p = EngineProfile(precision="fp16", max_batch=8, opt_batch=8)
    q = p.with_overrides(precision="int8", max_batch=2, workspace_mb=512)
    assert (q.precision, q.max_batch, q.opt_batch, q.workspace_bytes) == ("int8", 2, 2, 512 << 20)


def test_shape_profiles_from_manifest(tmp_path):
    m = open_bundle(make_fake_bundle(tmp_path / "b")).manifest  # T=4, crop 16, policy 8
    shapes = shape_profiles(m, max_batch=4, opt_batch=1)
    assert shapes["backbone"]["clip"] == ((1, 3, 1, 16, 16), (1, 3, 4, 16, 16), (4, 3, 4, 16, 16))
    assert shapes["policy"]["frames"] == ((1, 3, 4, 8, 8), (1, 3, 4, 8, 8), (4, 3, 4, 8, 8))


def test_int8_needs_calib(tmp_path):
    bundle = make_fake_bundle(tmp_path / "b")
    res = CliRunner().invoke(main, ["build-engines", str(bundle), "--int8"])
    assert res.exit_code == 2 and "--calib" in res.output


def test_calibration_batches_use_shared_preprocessing(tmp_path):
    from ada3d_edge.data.video import read_frames, write_video

    m = open_bundle(make_fake_bundle(tmp_path / "b")).manifest
    rng = np.random.default_rng(0)
    frames = rng.integers(0, 256, size=(12, 24, 32, 3), dtype=np.uint8)
    write_video(tmp_path / "v.avi", frames, fourcc="MJPG")
    (tmp_path / "calib.txt").write_text("v.avi 0\nv.avi 1\n")
    batches = list(calibration_batches(tmp_path / "calib.txt", m, "backbone"))
    assert len(batches) == 2 and batches[0].shape == (1, 3, m.num_frames, m.crop_size, m.crop_size)
    idx = preprocess.clip_indices(preprocess.uniform_clip_starts(12, m.num_frames, m.stride, 1)[0],
                                  m.num_frames, m.stride, 12)
    crops = preprocess.center_crop_frames(read_frames(tmp_path / "v.avi", idx), m.crop_size)
    np.testing.assert_array_equal(batches[0][0], preprocess.to_clip_tensor(crops, m.mean, m.std))
    policy = next(calibration_batches(tmp_path / "calib.txt", m, "policy", max_clips=1))
    assert policy.shape == (1, 3, m.num_frames, m.policy_size, m.policy_size)


# --- the builder against a fake TensorRT -------------------------------------------------------

class _Recorder:
    def __init__(self) -> None:
        self.calls: list = []


def _fake_trt(rec: _Recorder) -> types.SimpleNamespace:
    class Obj:
        def __init__(self, name):
            self._name = name

        def __getattr__(self, attr):
            def call(*args, **kwargs):
                rec.calls.append((f"{self._name}.{attr}", args, kwargs))
                if attr == "parse_from_file":
                    return True
                if attr == "build_serialized_network":
                    return b"PLAN"
                if attr == "serialize":
                    return b"CACHE"
                return Obj(attr)
            return call

    def ctor(name):
        def make(*args, **kwargs):
            rec.calls.append((name, args, kwargs))
            return Obj(name)
        return make

    return types.SimpleNamespace(
        __version__="10.3.0", Logger=type("Logger", (), {"WARNING": 2, "__init__": lambda self, lvl: None}),
        Builder=ctor("Builder"), OnnxParser=ctor("OnnxParser"),
        MemoryPoolType=types.SimpleNamespace(WORKSPACE="WORKSPACE"),
        BuilderFlag=types.SimpleNamespace(FP16="FP16", INT8="INT8"))


def test_build_engines_with_fake_tensorrt(tmp_path, monkeypatch):
    from ada3d_edge.runtime.backends import trt as trt_backend

    rec = _Recorder()
    monkeypatch.setattr(trt_export, "require_tensorrt", lambda: _fake_trt(rec))
    monkeypatch.setattr(trt_backend, "engine_identity", lambda device="cuda": ("10.3.0", "Orin (nvgpu)"))
    bundle_dir = make_fake_bundle(tmp_path / "b")
    entries = trt_export.build_engines(bundle_dir, EngineProfile(precision="fp16", max_batch=2))
    names = [c[0] for c in rec.calls]
    assert names.count("Builder") == 5  # policy + 4 configurations
    assert ("Builder.create_network", (0,), {}) in rec.calls  # TensorRT 10: explicit batch, no flag
    assert ("create_builder_config.set_memory_pool_limit", ("WORKSPACE", 1024 << 20), {}) in rec.calls
    assert ("create_builder_config.set_flag", ("FP16",), {}) in rec.calls
    shapes = [c[1] for c in rec.calls if c[0] == "create_optimization_profile.set_shape"]
    assert ("clip", (1, 3, 1, 16, 16), (1, 3, 4, 16, 16), (2, 3, 4, 16, 16)) in shapes
    assert ("frames", (1, 3, 4, 8, 8), (1, 3, 4, 8, 8), (2, 3, 4, 8, 8)) in shapes
    assert (bundle_dir / "timing.cache").read_bytes() == b"CACHE"
    bundle = open_bundle(bundle_dir)  # manifest updated and plan hashes verified
    plans = {e.mask: e for e in bundle.manifest.trt_engines}
    assert set(plans) == {"policy", "00", "01", "10", "11"} and len(entries) == 5
    assert plans["10"].file == "backbone_10.plan" and (bundle_dir / "backbone_10.plan").read_bytes() == b"PLAN"
    assert (plans["10"].tensorrt_version, plans["10"].gpu_name, plans["10"].precision, plans["10"].max_batch) == \
        ("10.3.0", "Orin (nvgpu)", "fp16", 2)
