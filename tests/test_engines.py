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
from ada3d_edge.export import fp16
from ada3d_edge.export import tensorrt as trt_export
from ada3d_edge.export.calibration import calibration_batches
from ada3d_edge.export.profiles import EngineProfile, load_profile, shape_profiles
from fake_bundle import make_fake_bundle
from segment_bundle import make_segment_bundle

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
        self.parsed: list = []  # (file name, input dtypes, initializer dtypes) of every parsed ONNX
        self.caches = 0


def _fake_trt(rec: _Recorder, version: str = "10.3.0") -> types.SimpleNamespace:
    """A fake ``tensorrt`` of one API generation: 10 has BuilderFlag.FP16/INT8 and calibrators, 11 has
    neither (accessing them raises AttributeError, as on TensorRT 11) and is strongly typed."""
    import onnx

    class Obj:
        def __init__(self, name):
            self._name = name

        def __getattr__(self, attr):
            def call(*args, **kwargs):
                rec.calls.append((f"{self._name}.{attr}", args, kwargs))
                if attr == "parse_from_file":
                    g = onnx.load(args[0]).graph
                    rec.parsed.append((Path(args[0]).name,
                                       frozenset(onnx.TensorProto.DataType.Name(i.type.tensor_type.elem_type)
                                                 for i in g.input),
                                       frozenset(onnx.TensorProto.DataType.Name(t.data_type) for t in g.initializer)))
                    return True
                if attr == "build_serialized_network":
                    return b"PLAN"
                if attr == "serialize":
                    rec.caches += 1
                    return f"CACHE{rec.caches}".encode()
                return Obj(attr)
            return call

    def ctor(name):
        def make(*args, **kwargs):
            rec.calls.append((name, args, kwargs))
            return Obj(name)
        return make

    trt = types.SimpleNamespace(
        __version__=version, Logger=type("Logger", (), {"WARNING": 2, "__init__": lambda self, lvl: None}),
        Builder=ctor("Builder"), OnnxParser=ctor("OnnxParser"),
        MemoryPoolType=types.SimpleNamespace(WORKSPACE="WORKSPACE"))
    if version.startswith("10."):
        trt.BuilderFlag = types.SimpleNamespace(FP16="FP16", INT8="INT8")
        trt.NetworkDefinitionCreationFlag = types.SimpleNamespace(EXPLICIT_BATCH=0, STRONGLY_TYPED=1)
        trt.IInt8EntropyCalibrator2 = type("IInt8EntropyCalibrator2", (), {"__init__": lambda self: None})
    else:
        trt.BuilderFlag = types.SimpleNamespace(TF32="TF32")  # no FP16 / INT8
        trt.NetworkDefinitionCreationFlag = types.SimpleNamespace(STRONGLY_TYPED=0)  # ignored: always typed
    return trt


SEGMENT_PLANS = ["stem_v0", "stem_v1", "res2_v0", "res2_v1", "res3_v0", "res3_v1", "res4_v0", "res4_v1",
                 "res5_v0", "res5_v1", "head_v0"]  # slow_tiny at --fold auto: 11 pieces for 4 configurations


@pytest.fixture(scope="module")
def segment_bundle(tmp_path_factory) -> Path:
    return make_segment_bundle(tmp_path_factory.mktemp("seg") / "b")[0]


def _copy(bundle_dir: Path, tmp_path: Path) -> Path:
    import shutil

    return Path(shutil.copytree(bundle_dir, tmp_path / "b"))


def test_build_engines_with_fake_tensorrt(segment_bundle, tmp_path, monkeypatch):
    rec, messages = _Recorder(), []
    monkeypatch.setattr(trt_export, "require_tensorrt", lambda: _fake_trt(rec))
    monkeypatch.setattr(trt_export, "engine_identity", lambda device="cuda": ("10.3.0", "Orin (nvgpu)"))
    bundle_dir = _copy(segment_bundle, tmp_path)
    entries = trt_export.build_engines(bundle_dir, EngineProfile(precision="fp16", max_batch=2),
                                       progress=messages.append)
    names = [c[0] for c in rec.calls]
    assert names.count("Builder") == 12  # policy + one engine per segment variant (not per configuration)
    assert [p[0] for p in rec.parsed] == ["policy.onnx"] + [f"{n}.onnx" for n in SEGMENT_PLANS]
    parsed_dirs = {Path(c[1][0]).parent for c in rec.calls if c[0] == "OnnxParser.parse_from_file"}
    assert parsed_dirs == {bundle_dir}  # TensorRT 10: the bundle's files, their weights in backbone.weights beside
    assert ("Builder.create_network", (0,), {}) in rec.calls  # TensorRT 10: explicit batch, no flag
    assert ("create_builder_config.set_memory_pool_limit", ("WORKSPACE", 1024 << 20), {}) in rec.calls
    assert ("create_builder_config.set_flag", ("FP16",), {}) in rec.calls
    # one profile per engine: B in [1, 2], T' in [1, T]; each segment's boundary shape from its ONNX input
    shapes = [c[1] for c in rec.calls if c[0] == "create_optimization_profile.set_shape"]
    assert names.count("create_builder_config.add_optimization_profile") == 12 and len(shapes) == 12
    assert shapes[0] == ("frames", (1, 3, 8, 8, 8), (1, 3, 8, 8, 8), (2, 3, 8, 8, 8))
    bundle = open_bundle(bundle_dir)  # manifest updated and plan hashes verified
    for (name, lo, opt, hi), plan in zip(shapes[1:], SEGMENT_PLANS):
        _, c, _, h, w = trt_export.onnx_input_dims(bundle_dir / f"{plan}.onnx")["x"]
        assert (name, lo, opt, hi) == ("x", (1, c, 1, h, w), (1, c, 8, h, w), (2, c, 8, h, w))
    assert {s[1][1] for s in shapes[1:]} == {3, 8, 32, 64, 128, 256}  # boundaries really differ per segment
    assert (bundle_dir / "timing.cache").read_bytes() == b"CACHE12"
    caches = [c[1] for c in rec.calls if c[0] == "create_builder_config.create_timing_cache"]
    assert caches == [(b"",)] + [(f"CACHE{i}".encode(),) for i in range(1, 12)]  # one cache, chained
    assert all(p[1] == {"FLOAT"} and p[2] <= {"FLOAT"} for p in rec.parsed)  # TensorRT 10: the FP32 ONNX
    plans = {e.name: e for e in bundle.manifest.trt_engines}
    assert set(plans) == {"policy", *SEGMENT_PLANS} and len(entries) == 12
    e = plans["res4_v1"]
    assert (e.model, e.segment, e.variant, e.file) == ("segment", "res4", 1, "res4_v1.plan")
    assert (bundle_dir / "res4_v1.plan").read_bytes() == b"PLAN" and plans["policy"].model == "policy"
    assert (e.tensorrt_version, e.gpu_name, e.precision, e.max_batch) == ("10.3.0", "Orin (nvgpu)", "fp16", 2)
    built = [m for m in messages if m.startswith("built ")]
    assert len(built) == 12 and all(" s, " in m and m.endswith(" MiB") for m in built)  # build time and bytes
    assert messages[-1].startswith("12 engines (11 segment variants + policy) in ")


def test_segment_shape_profile_refuses_other_dynamic_axes():
    from ada3d_edge.export.profiles import segment_shape_profile

    assert segment_shape_profile("x", ["B", 8, "T", 4, 4], 8, 2, 1) == ((1, 8, 1, 4, 4), (1, 8, 8, 4, 4),
                                                                       (2, 8, 8, 4, 4))
    with pytest.raises(ValueError, match=r"res2_v0\.onnx: input 'x' dims \['B', 8, 'T', 'H', 4\]"):
        segment_shape_profile("x", ["B", 8, "T", "H", 4], 8, 2, 1, "res2_v0.onnx")
    with pytest.raises(ValueError, match="a segment takes"):
        segment_shape_profile("x", ["B", 8], 8, 2, 1)


def test_build_refuses_per_configuration_bn_segments(segment_bundle, tmp_path, monkeypatch):
    import dataclasses

    from ada3d_edge.bundle import read_manifest, write_manifest

    bundle_dir = _copy(segment_bundle, tmp_path)
    m = read_manifest(bundle_dir)
    seg = m.backbone.segments[3]
    seg.variants[0] = dataclasses.replace(seg.variants[0], inputs=["x", "stage_mask"])
    write_manifest(bundle_dir, m)
    monkeypatch.setattr(trt_export, "require_tensorrt", lambda: pytest.fail("TensorRT needed before the check"))
    with pytest.raises(ValueError, match=r"res4_v0\.onnx: this segment takes 'stage_mask'"):
        trt_export.build_engines(bundle_dir, EngineProfile())


# --- one home for the TensorRT/CUDA helpers (issue 12, item 3) ----------------------------------

PACKAGE = Path(__file__).resolve().parents[1] / "ada3d_edge"


def _imports(path: Path) -> list:
    """(module as written, dots, names) of every import in a file, lazy ones included."""
    import ast

    out = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            out.append((node.module or "", node.level, [a.name for a in node.names]))
        elif isinstance(node, ast.Import):
            out += [(a.name, 0, []) for a in node.names]
    return out


def test_trt_helpers_defined_once_and_shared():
    import ast

    helpers = {"import_tensorrt", "import_cudart", "cuda_call", "_cuda_call", "parse_cuda_device",
               "running_gpu_name", "engine_identity"}
    defined = {}
    for path in PACKAGE.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.FunctionDef) and node.name in helpers:
                defined.setdefault(node.name, []).append(path.relative_to(PACKAGE).as_posix())
    assert {name: files for name, files in defined.items() if files != ["trt_api.py"]} == {}
    for path in (PACKAGE / "export").glob("*.py"):  # export reaches runtime's TensorRT code through trt_api only
        for module, level, names in _imports(path):
            assert "trt_backend" not in module and "backends" not in module, (path.name, module)
            ours = level > 0 or module.startswith("ada3d_edge")
            assert not (ours and [n for n in names if n.startswith("_") and not n.startswith("__")]), \
                (path.name, module, names)  # no other module's private names
    assert not [m for m, level, _ in _imports(PACKAGE / "trt_api.py") if level or m.split(".")[0] in ("torch", "ada3d_edge")]


def _fake_run(tmp_path, monkeypatch, version: str, precision: str, calib=None, bundle_dir=None):
    rec, messages = _Recorder(), []
    monkeypatch.setattr(trt_export, "require_tensorrt", lambda: _fake_trt(rec, version))
    monkeypatch.setattr(trt_export, "engine_identity", lambda device="cuda": (version, "GPU"))
    bundle_dir = bundle_dir or make_fake_bundle(tmp_path / "b")
    entries = trt_export.build_engines(bundle_dir, EngineProfile(precision=precision), calib_list=calib,
                                       progress=messages.append)
    return rec, bundle_dir, entries, messages


def test_tensorrt_11_fp16_builds_strongly_typed_from_fp16_onnx(tiny_real_bundle, tmp_path, monkeypatch):
    import shutil

    bundle_dir = Path(shutil.copytree(tiny_real_bundle, tmp_path / "b"))
    rec, _, entries, messages = _fake_run(tmp_path, monkeypatch, "11.3.0", "fp16", bundle_dir=bundle_dir)
    names = [c[0] for c in rec.calls]
    assert names.count("Builder") == 12 and len(entries) == 12
    assert [c[1] for c in rec.calls if c[0] == "Builder.create_network"] == [(1,)] * 12  # 1 << STRONGLY_TYPED
    assert "create_builder_config.set_flag" not in names and "create_builder_config.set_calibration_profile" not in names
    assert [p[0] for p in rec.parsed] == ["policy.onnx"] + [f"{n}.onnx" for n in SEGMENT_PLANS]
    assert {p[1] for p in rec.parsed} == {frozenset({"FLOAT"})}  # engine inputs stay float32
    precision = {e.file: e.precision for e in entries}
    parsed = {p[0]: p[2] for p in rec.parsed}
    for name in SEGMENT_PLANS:  # every segment file was fed as its FP16 copy (weights inlined from backbone.weights)
        assert precision[f"{name}.plan"] == "fp16"
        assert ("FLOAT16" in parsed[f"{name}.onnx"]) == (name != "head_v0")  # fp16.py keeps the fc head float32
    # the policy too, unless its copy strayed past the check: then the FP32 file, said and recorded
    fell_back = [msg for msg in messages if "building policy.plan in FP32" in msg]
    assert (precision["policy.plan"], "FLOAT16" in parsed["policy.onnx"]) == (("fp32", False) if fell_back
                                                                             else ("fp16", True))
    parsed_dirs = {Path(c[1][0]).parent for c in rec.calls if c[0] == "OnnxParser.parse_from_file"}
    assert not any(d.exists() for d in parsed_dirs - {bundle_dir})  # temporary copies, removed
    assert (bundle_dir / "timing.cache").read_bytes() == b"CACHE12"
    plans = {e.name: e for e in open_bundle(bundle_dir).manifest.trt_engines}
    assert plans["res5_v0"].precision == "fp16" and plans["res5_v0"].tensorrt_version == "11.3.0"


def _calib_list(tmp_path) -> Path:
    (tmp_path / "calib.txt").write_text("v.avi 0\n")  # the list is checked up front; videos when read
    return tmp_path / "calib.txt"


def test_tensorrt_11_int8_is_refused_before_any_build(tmp_path, monkeypatch):
    with pytest.raises(ValueError, match=r"TensorRT 11.3.0 builds INT8 only from explicit Q/DQ.*tensorrt<11"):
        _fake_run(tmp_path, monkeypatch, "11.3.0", "int8", _calib_list(tmp_path))
    bundle_dir = tmp_path / "b"
    res = CliRunner().invoke(main, ["build-engines", str(bundle_dir), "--int8", "--calib", str(_calib_list(tmp_path))])
    assert res.exit_code == 1 and "Q/DQ" in res.output and "Traceback" not in res.output
    assert not list(bundle_dir.glob("*.plan")) and not (bundle_dir / "timing.cache").exists()


def test_tensorrt_10_int8_keeps_flags_and_calibrator(segment_bundle, tmp_path, monkeypatch):
    from ada3d_edge.export import calibration

    monkeypatch.setattr(trt_export, "import_cudart", lambda: types.SimpleNamespace())
    rec, bundle_dir, entries, _ = _fake_run(tmp_path, monkeypatch, "10.3.0", "int8", _calib_list(tmp_path),
                                            bundle_dir=_copy(segment_bundle, tmp_path))
    flags = [c[1] for c in rec.calls if c[0] == "create_builder_config.set_flag"]
    assert flags == [("FP16",), ("INT8",)] * 12
    assert [c[0] for c in rec.calls].count("create_builder_config.set_calibration_profile") == 12
    assert [c[1] for c in rec.calls if c[0] == "Builder.create_network"] == [(0,)] * 12
    assert all(p[1] == {"FLOAT"} and p[2] <= {"FLOAT"} for p in rec.parsed)
    assert calibration is not None and {e.precision for e in entries} == {"int8"}


@pytest.fixture(scope="module")
def tiny_real_bundle(tmp_path_factory) -> Path:
    """Real segment files (slow_tiny) and a real selection network (MobileNetV2, width 0.35)."""
    from ada3d_edge.train.checkpoint import load_model
    from export_helpers import make_checkpoint

    root = tmp_path_factory.mktemp("fp16")
    model, _ = load_model(make_checkpoint(root / "ckpt.pt", "slow_tiny", 8, 16, policy_size=16))
    return make_segment_bundle(root / "bundle", selection=model.selection.eval(), policy_size=16)[0]


def test_fp16_onnx_matches_fp32_in_onnxruntime(tiny_real_bundle, tmp_path):
    import onnx
    from onnx import numpy_helper

    bundle = open_bundle(tiny_real_bundle)
    files = [(bundle.policy_path, "policy")] + [(bundle.root / v.file, "segment") for seg in
                                                bundle.manifest.backbone.segments for v in seg.variants]
    rng = np.random.default_rng(1)
    for src, kind in files:
        dst = fp16.convert_to_fp16(src, tmp_path / src.name)
        g = onnx.load(str(dst)).graph
        dtypes = {t.name: t.data_type for t in g.initializer}
        convs = [n.input[1] for n in g.node if n.op_type == "Conv"]
        heads = [n.input[1] for n in g.node if n.op_type == "Gemm"]
        assert convs or heads
        assert {dtypes[w] for w in convs} <= {onnx.TensorProto.FLOAT16}
        assert {dtypes[w] for w in heads} <= {onnx.TensorProto.FLOAT}  # the heads stay float32
        assert [i.type.tensor_type.elem_type for i in g.input] == [onnx.TensorProto.FLOAT]
        assert {o.type.tensor_type.elem_type for o in g.output} == {onnx.TensorProto.FLOAT}
        if kind == "policy":
            x = preprocess_like_input(bundle.manifest, kind)
        else:  # a segment's boundary tensor at (1, C, T, H, W)
            c, h, w = [d for i, d in enumerate(trt_export.onnx_input_dims(src)["x"]) if i not in (0, 2)]
            x = rng.standard_normal((1, c, bundle.manifest.num_frames, h, w)).astype(np.float32)
        # random-weight nets amplify rounding with depth: the 53-conv MobileNetV2 more than a segment
        diff = fp16.check_fp16(src, dst, {g.input[0].name: x}, rtol=0.05 if kind == "segment" else 0.15)
        assert 0 < diff or not convs  # really computed in another precision (the fp32 head alone: exact)
        if convs:  # half the weight bytes (a segment's own weights live in backbone.weights)
            def weight_bytes(path):
                return sum(numpy_helper.to_array(t).nbytes for t in onnx.load(str(path)).graph.initializer)

            assert weight_bytes(dst) < 0.6 * weight_bytes(src)


def preprocess_like_input(m, kind: str) -> np.ndarray:
    """A preprocessed clip of random frames, as the runtime feeds it."""
    frames = np.random.default_rng(1).integers(0, 256, size=(m.num_frames, 40, 48, 3), dtype=np.uint8)
    crops = preprocess.center_crop_frames(frames, m.crop_size)
    x = (preprocess.to_clip_tensor(crops, m.mean, m.std) if kind == "backbone"
         else preprocess.to_policy_tensor(crops, m.policy_size, m.mean, m.std))
    return x[None]


def test_fp16_conversion_of_an_if_graph_with_outer_scope_weights(tmp_path):
    """The shared-weight layout may use `If` per stage: branches read outer-scope weights and inputs."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    w = numpy_helper.from_array(rng.standard_normal((4, 4)).astype(np.float32), "w")
    scale = numpy_helper.from_array(np.array([0.5], np.float32), "scale")
    then = helper.make_graph([helper.make_node("MatMul", ["x", "w"], ["y_then"])], "then", [],
                             [helper.make_tensor_value_info("y_then", TensorProto.FLOAT, None)])
    other = helper.make_graph([helper.make_node("Mul", ["x", "scale"], ["y_else"])], "else", [],
                              [helper.make_tensor_value_info("y_else", TensorProto.FLOAT, None)])
    graph = helper.make_graph(
        [helper.make_node("If", ["cond"], ["y"], then_branch=then, else_branch=other)], "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 4]),
         helper.make_tensor_value_info("cond", TensorProto.BOOL, [])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 4])], [w, scale])
    src = tmp_path / "if.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(src))
    dst = fp16.convert_to_fp16(src, tmp_path / "if16.onnx")
    x = rng.standard_normal((2, 4)).astype(np.float32)
    for cond in (True, False):
        assert fp16.check_fp16(src, dst, {"x": x, "cond": np.array(cond)}, rtol=0.01) > 0


def test_tensorrt_11_file_whose_fp16_copy_strays_is_built_fp32(tiny_real_bundle, tmp_path, monkeypatch):
    import shutil

    def strict(fp32_path, fp16_path, feeds, rtol=0.05):  # as if the policy's copy were off by 1.0
        if Path(fp32_path).name == "policy.onnx":
            raise fp16.Fp16ConversionError("policy.onnx: FP16 outputs differ from FP32 by 1 > 0.05")
        return real(fp32_path, fp16_path, feeds, rtol)

    real = trt_export.check_fp16
    monkeypatch.setattr(trt_export, "check_fp16", strict)
    bundle_dir = Path(shutil.copytree(tiny_real_bundle, tmp_path / "b"))
    rec, _, entries, messages = _fake_run(tmp_path, monkeypatch, "11.3.0", "fp16", bundle_dir=bundle_dir)
    assert {e.file: e.precision for e in entries} == {"policy.plan": "fp32", **{
        f"{n}.plan": "fp16" for n in SEGMENT_PLANS}}
    assert any("differ from FP32 by 1" in msg and "building policy.plan in FP32" in msg for msg in messages)
    parsed = {p[0]: p[2] for p in rec.parsed}
    assert "FLOAT16" not in parsed["policy.onnx"] and "FLOAT16" in parsed["res5_v1.onnx"]
    policy_path = next(c[1][0] for c in rec.calls if c[0] == "OnnxParser.parse_from_file"
                       and Path(c[1][0]).name == "policy.onnx")
    assert Path(policy_path) == bundle_dir / "policy.onnx"  # the bundle's own FP32 file


def test_fp16_without_onnx_names_what_to_install(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "onnx", None)
    with pytest.raises(ImportError, match=r"pip install onnx"):
        fp16.convert_to_fp16(tmp_path / "a.onnx", tmp_path / "b.onnx")


def test_segment_calibration_batches_are_the_chain_up_to_the_segment(segment_bundle, tmp_path):
    """INT8 on TensorRT 10 calibrates each segment on what reaches it: the clips through the segments before."""
    import onnxruntime as ort

    from ada3d_edge.data.video import write_video
    from ada3d_edge.export.calibration import segment_calibration_batches
    from segment_bundle import reference_logits, tiny_backbone

    frames = np.random.default_rng(0).integers(0, 256, size=(20, 24, 32, 3), dtype=np.uint8)
    write_video(tmp_path / "v.avi", frames, fourcc="MJPG")
    (tmp_path / "calib.txt").write_text("v.avi 0\nv.avi 1\n")
    bundle = open_bundle(segment_bundle)
    clips = list(calibration_batches(tmp_path / "calib.txt", bundle.manifest, "backbone"))
    first = list(segment_calibration_batches(bundle, 0, 1, tmp_path / "calib.txt"))
    assert len(first) == 2 and all(np.array_equal(a, b) for a, b in zip(first, clips))  # the stem gets the clips
    res4 = list(segment_calibration_batches(bundle, 3, 0, tmp_path / "calib.txt"))
    assert res4[0].shape == (1, 64, 8, 2, 2)
    head = ort.InferenceSession(str(segment_bundle / "head_v0.onnx"), providers=["CPUExecutionProvider"])
    feats = list(segment_calibration_batches(bundle, 5, 0, tmp_path / "calib.txt"))  # as configuration 00 runs
    b = tiny_backbone()
    for x, clip in zip(feats, clips):
        np.testing.assert_allclose(head.run(None, {"x": x})[0], reference_logits(b, "00", clip), rtol=1e-4, atol=1e-4)
