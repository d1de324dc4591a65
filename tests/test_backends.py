"""Backends: ONNX Runtime on the fake bundle, factory errors, and TensorRT without TensorRT.

TensorRT and a GPU are absent here: the TensorRT backend is tested for its lazy-import error,
its refusal of foreign plans, and (with fake ``tensorrt``/``cudart`` modules that keep "device"
memory on the host) its buffer handling, through the predictor.
"""
from __future__ import annotations

import ctypes
import functools
import os
import sys
import types
from pathlib import Path

import numpy as np
import pytest

from ada3d_edge.bundle import TrtEngineEntry, add_trt_engines, open_bundle
from ada3d_edge.runtime.backends import make_backend
from ada3d_edge.runtime.backends import trt as trt_backend
from ada3d_edge.runtime.backends.ort import OrtBackend, ort_providers
from ada3d_edge.runtime.predictor import AdaptivePredictor
from ada3d_edge.runtime.backends.trt import EngineMismatchError, TrtBackend, check_engine_compat
from fake_bundle import make_clip, make_fake_bundle


@pytest.fixture(scope="module")
def bundle_dir(tmp_path_factory) -> Path:
    return make_fake_bundle(tmp_path_factory.mktemp("bundle"))


# --- ONNX Runtime ------------------------------------------------------------------------------

def test_ort_runs_named_io(bundle_dir: Path) -> None:
    with OrtBackend(intra_op_threads=1) as backend:
        backend.load("backbone", bundle_dir / "backbone_shared.onnx")
        assert backend.input_names("backbone") == ["clip", "stage_mask"] and backend.names == ["backbone"]
        clip = np.random.default_rng(0).standard_normal((2, 3, 3, 16, 16)).astype(np.float32)
        out = backend.run("backbone", {"clip": clip, "stage_mask": np.array([1, 1])})  # any int dtype: int64
        assert list(out) == ["logits"] and out["logits"].shape == (2, 5)
        other = backend.run("backbone", {"clip": clip, "stage_mask": np.array([0, 1], np.int64)})
        assert not np.allclose(other["logits"], out["logits"])  # the feed picks the configuration
        with pytest.raises(ValueError, match=r"takes inputs \['clip', 'stage_mask'\], got \['frames'\]"):
            backend.run("backbone", {"frames": np.zeros((1, 3, 1, 16, 16), np.float32)})
        with pytest.raises(KeyError, match="'policy' is not loaded"):
            backend.run("policy", {})
        assert "onnxruntime" in backend.describe()
    with pytest.raises(RuntimeError, match="closed"):
        backend.load("policy", bundle_dir / "policy.onnx")


def test_ort_gpu_providers() -> None:
    assert ort_providers("cpu", ["CPUExecutionProvider"]) == ["CPUExecutionProvider"]
    assert ort_providers("cuda", ["CUDAExecutionProvider", "CPUExecutionProvider"]) == [
        "CUDAExecutionProvider", "CPUExecutionProvider"]
    with pytest.raises(RuntimeError, match=r"CUDAExecutionProvider.*pip install onnxruntime-gpu"):
        ort_providers("cuda", ["CPUExecutionProvider"])
    with pytest.raises(RuntimeError, match="TensorrtExecutionProvider"):
        ort_providers("tensorrt", ["CUDAExecutionProvider", "CPUExecutionProvider"])
    with pytest.raises(ValueError, match="unknown device 'gpu'"):
        ort_providers("gpu")


def test_make_backend_errors() -> None:
    with pytest.raises(ValueError, match=r"unknown backend kind 'tensorrt'; valid kinds: \['ort', 'trt', 'torch'\]"):
        make_backend("tensorrt")
    with pytest.raises(ValueError, match="modules="):
        make_backend("torch")
    assert make_backend("ort", intra_op_threads=1).kind == "ort"


# --- TensorRT: without TensorRT ----------------------------------------------------------------

def test_trt_lazy_import_error(monkeypatch) -> None:
    monkeypatch.setitem(sys.modules, "tensorrt", None)  # import tensorrt -> ImportError
    with pytest.raises(ImportError, match=r"pip install ada3d-edge\[trt\].*JetPack"):
        TrtBackend()
    with pytest.raises(ImportError, match=r"ada3d-edge\[trt\]"):
        make_backend("trt")


def test_trt_refuses_foreign_plans() -> None:
    meta = {"file": "backbone_11.plan", "tensorrt_version": "10.3.0", "gpu_name": "Orin"}
    check_engine_compat(meta, "10.3.0", "Orin")
    check_engine_compat({"file": "x.plan"}, "10.7.0", "H100")  # nothing recorded: nothing to check
    with pytest.raises(EngineMismatchError, match=r"backbone_11\.plan: built with TensorRT 10\.3\.0, this is "
                                                  r"TensorRT 10\.7\.0.*build-engines"):
        check_engine_compat(meta, "10.7.0", "Orin")
    with pytest.raises(EngineMismatchError, match="built on GPU 'Orin', this GPU is 'NVIDIA H100'"):
        check_engine_compat(meta, "10.3.0", "NVIDIA H100")
    with pytest.raises(ValueError, match="'cuda' or 'cuda:N'"):
        trt_backend.parse_cuda_device("cpu")
    assert trt_backend.parse_cuda_device("cuda:1") == 1


# --- TensorRT: fake tensorrt + cudart ----------------------------------------------------------

class _FakeCudart:
    """Host memory standing in for device memory; pointers are real addresses."""

    cudaMemcpyKind = types.SimpleNamespace(cudaMemcpyHostToDevice=1, cudaMemcpyDeviceToHost=2)

    def __init__(self) -> None:
        self.mem: dict[int, np.ndarray] = {}

    def _alloc(self, nbytes):
        arr = np.zeros(nbytes, np.uint8)
        self.mem[arr.ctypes.data] = arr
        return 0, arr.ctypes.data

    cudaMalloc = cudaMallocHost = _alloc

    def _free(self, ptr):
        del self.mem[ptr]
        return (0,)

    cudaFree = cudaFreeHost = _free

    def cudaMemcpyAsync(self, dst, src, nbytes, kind, stream):
        ctypes.memmove(dst, src, nbytes)
        return (0,)

    def cudaSetDevice(self, i):
        return (0,)

    def cudaStreamCreate(self):
        return 0, 7

    def cudaStreamSynchronize(self, s):
        return (0,)

    def cudaStreamDestroy(self, s):
        return (0,)

    def cudaMemGetInfo(self):
        return 0, 1 << 30, 2 << 30

    def cudaGetDeviceProperties(self, i):
        return 0, types.SimpleNamespace(name=b"Fake GPU\x00\x00")


def _add_policy_plan(bundle_dir: Path, gpu_name: str = "Fake GPU", version: str = "10.8.0") -> None:
    import json

    (bundle_dir / "policy.plan").write_text(json.dumps({"onnx": str(bundle_dir / "policy.onnx")}))
    add_trt_engines(bundle_dir, [TrtEngineEntry.for_file(bundle_dir, "policy.plan", model="policy",
                                                         tensorrt_version=version, gpu_name=gpu_name, max_batch=2)])


@pytest.fixture(scope="module")
def segment_bundle_dir(tmp_path_factory) -> Path:
    from segment_bundle import make_segment_bundle

    return make_segment_bundle(tmp_path_factory.mktemp("seg") / "bundle")[0]


def test_trt_backend_with_fake_tensorrt(segment_bundle_dir: Path, tmp_path: Path, monkeypatch) -> None:
    """The predictor on TensorRT (policy plan + chained segment plans) predicts what it does on ONNX Runtime."""
    import shutil

    log, cudart = _ChainLog(), _FakeCudart()
    monkeypatch.setitem(sys.modules, "tensorrt", _fake_tensorrt_segments("10.8.0", 2, 8, log))
    monkeypatch.setattr(trt_backend, "import_cudart", lambda: cudart)
    bundle_dir = Path(shutil.copytree(segment_bundle_dir, tmp_path / "bundle"))
    _add_policy_plan(bundle_dir)
    _add_segment_plans(bundle_dir)
    keeps = [[True] * 4 + [False] * 4, [True, False] * 4, [False, True] * 4, [True] * 8]
    clips = [make_clip(keep, mask, seed=i) for i, (keep, mask) in enumerate(zip(keeps, ["11", "11", "11", "01"]))]
    with AdaptivePredictor(bundle_dir, intra_op_threads=1) as ort_pred:
        expected = ort_pred.predict_batch(clips)
    with AdaptivePredictor(bundle_dir, backend="trt") as trt_pred:
        assert trt_pred.max_batch == 2  # from the plans' max_batch: 3 clips of one group run as 2 + 1
        assert "TensorRT 10.8.0 on Fake GPU" in trt_pred.backend.describe()
        assert trt_pred.backend.names == ["policy", "backbone"]
        got = trt_pred.predict_batch(clips)
        for a, b in zip(got, expected):
            assert a.stage_mask == b.stage_mask and a.frame_mask.tolist() == b.frame_mask.tolist()
            np.testing.assert_allclose(a.scores, b.scores, rtol=1e-4, atol=1e-5)
        assert len({c.scratch[0] for c in log.contexts}) == 1  # the policy shares the segments' scratch
        with pytest.raises(ValueError, match=r"\(3, 3, 8, 16, 16\) \(73728 bytes\) but its buffer holds 49152 bytes"):
            trt_pred.backend.run("backbone", {"clip": np.zeros((3, 3, 8, 16, 16), np.float32),
                                              "stage_mask": np.array([1, 1])})
        assert trt_pred.backend.peak_memory_mb() == pytest.approx(1024.0)
    assert cudart.mem == {}  # every host and device buffer freed on close


def test_trt_predictor_refuses_plans_from_another_gpu(segment_bundle_dir: Path, tmp_path: Path, monkeypatch) -> None:
    import shutil

    monkeypatch.setitem(sys.modules, "tensorrt", _fake_tensorrt_segments("10.8.0", 2, 8, _ChainLog()))
    monkeypatch.setattr(trt_backend, "import_cudart", _FakeCudart)
    bundle_dir = Path(shutil.copytree(segment_bundle_dir, tmp_path / "bundle"))
    with pytest.raises(Exception, match=r"no TensorRT plan for 'policy'.*build-engines"):
        AdaptivePredictor(bundle_dir, backend="trt")
    _add_policy_plan(bundle_dir)
    with pytest.raises(Exception, match=r"no TensorRT plan for segment 'stem_v0'.*build-engines"):
        AdaptivePredictor(bundle_dir, backend="trt")
    _add_segment_plans(bundle_dir, gpu_name="Orin")
    assert open_bundle(bundle_dir).trt_engines("res4_v1")[0].gpu_name == "Orin"
    with pytest.raises(EngineMismatchError, match="built on GPU 'Orin', this GPU is 'Fake GPU'"):
        AdaptivePredictor(bundle_dir, backend="trt")


def test_ort_thread_pool_options(bundle_dir: Path) -> None:
    key = "session.intra_op.allow_spinning"
    with OrtBackend(intra_op_threads=1, allow_spinning=False) as be:
        be.load("policy", bundle_dir / "policy.onnx")
        opts = be._sessions["policy"].get_session_options()
        assert opts.intra_op_num_threads == 1 and opts.get_session_config_entry(key) == "0"
    with OrtBackend(intra_op_threads=2, allow_spinning=True) as be:
        be.load("policy", bundle_dir / "policy.onnx")
        opts = be._sessions["policy"].get_session_options()
        assert opts.intra_op_num_threads == 2 and opts.get_session_config_entry(key) == "1"


def test_run_threads_reach_the_sessions(bundle_dir: Path, tmp_path: Path, monkeypatch) -> None:
    from click.testing import CliRunner

    from ada3d_edge.cli import main
    from ada3d_edge.runtime import backends
    from stream_helpers import make_clip

    seen = []
    init = OrtBackend.__init__

    def spy(self, *args, **kwargs):
        seen.append((kwargs.get("intra_op_threads"), kwargs.get("allow_spinning")))
        init(self, *args, **kwargs)

    monkeypatch.setattr(OrtBackend, "__init__", spy)
    clip = make_clip(tmp_path / "clip.mp4", num_frames=20)
    for extra, expected in (([], (backends.ORT_RUN_THREADS, backends.ORT_RUN_SPINNING)),
                            (["--threads", "2", "--spin"], (2, True))):
        res = CliRunner().invoke(main, ["run", str(bundle_dir), "--source", str(clip), "--jsonl", os.devnull,
                                        *extra])
        assert res.exit_code == 0, res.output
        assert seen[-1] == expected


# --- TensorRT: segment chains (bundle format 2) against fakes of TensorRT 10.0, 10.x and 11 ----

def _segment_fn(spec: dict):
    """The numpy function a fake segment engine computes: a seeded channel mix, a spatial average
    pool, a tanh; the head averages over (T, H, W) and applies a seeded matrix. A spec naming an
    ``onnx`` file runs that segment file in ONNX Runtime instead (what the real engine was built from)."""
    rng = np.random.default_rng(spec["seed"])
    w = rng.standard_normal((spec["cout"], spec["cin"])).astype(np.float32)

    def fn(x: np.ndarray) -> np.ndarray:
        if spec.get("head"):
            return x.mean(axis=(2, 3, 4)) @ w.T
        y = np.tanh(np.einsum("oc,bcthw->bothw", w, x))
        p = spec["pool"]
        b, c, t, h, wd = y.shape
        return y.reshape(b, c, t, h // p, p, wd // p, p).mean(axis=(4, 6)).astype(np.float32)
    return fn


def _run_spec(spec: dict, feeds: dict) -> dict:
    """Outputs of a fake engine by name: its ONNX file in ONNX Runtime, or ``_segment_fn``."""
    if "onnx" not in spec:
        return {"y": _segment_fn(spec)(feeds["x"])}
    sess = _ort_session(spec["onnx"])
    return dict(zip([o.name for o in sess.get_outputs()], sess.run(None, feeds)))


@functools.lru_cache(maxsize=None)
def _ort_session(path: str):
    import onnxruntime as ort

    return ort.InferenceSession(path, providers=["CPUExecutionProvider"])


def _segment_out_shape(spec: dict, shape: tuple) -> tuple:
    if spec.get("head"):
        return (shape[0], spec["cout"])
    return (shape[0], spec["cout"], shape[2], shape[3] // spec["pool"], shape[4] // spec["pool"])


class _ChainLog:
    def __init__(self) -> None:
        self.executed: list = []  # (plan name, input address, output address, input shape)
        self.contexts: list = []


def _fake_tensorrt_segments(version: str, max_batch: int, num_frames: int, log: _ChainLog) -> types.ModuleType:
    """A ``tensorrt`` whose plans are JSON specs of ``_segment_fn``; execution reads and writes the
    addresses bound with ``set_tensor_address``. The scratch API is the one of ``version``: 10.0 has
    ``device_memory_size`` and the ``device_memory`` attribute; later 10.x ``device_memory_size_v2`` and
    ``set_device_memory``; 11 also the runtime config. A spec ``{"onnx": path}`` runs that file in ONNX
    Runtime (I/O names and dims from the file, dynamic axes spanning 1..max_batch and 1..num_frames)."""
    import json

    major, minor = (int(v) for v in version.split(".")[:2])
    v2 = (major, minor) >= (10, 1)
    trt = types.ModuleType("tensorrt")
    trt.__version__ = version
    trt.TensorIOMode = types.SimpleNamespace(INPUT="in", OUTPUT="out")
    trt.Logger = type("Logger", (), {"WARNING": 2, "__init__": lambda self, level=2: None})
    trt.nptype = lambda dtype: np.float32
    trt.ExecutionContextAllocationStrategy = types.SimpleNamespace(STATIC=0, USER_MANAGED=2)

    class Context:
        def __init__(self, engine):
            self.engine, self.shapes, self.addr, self.scratch = engine, {}, {}, None
            log.contexts.append(self)

        if v2:
            def set_device_memory(self, ptr, size):
                self.scratch = (ptr, size)
        else:
            @property
            def device_memory(self):
                return None if self.scratch is None else self.scratch[0]

            @device_memory.setter
            def device_memory(self, ptr):
                self.scratch = (ptr, None)

        def set_input_shape(self, name, shape):
            self.shapes[name] = tuple(shape)
            return shape[0] <= max_batch and (len(shape) < 3 or 1 <= shape[2] <= num_frames)

        def set_tensor_address(self, name, ptr):
            self.addr[name] = ptr

        def _feeds(self, zeros: bool) -> dict:
            return {n: np.zeros(self.shapes[n], np.float32) if zeros else np.ctypeslib.as_array(
                (ctypes.c_float * int(np.prod(self.shapes[n]))).from_address(self.addr[n])).reshape(
                    self.shapes[n]).copy() for n in self.engine.inputs}

        def get_tensor_shape(self, name):
            if name in self.engine.inputs:
                return self.shapes[name]
            if "onnx" not in self.engine.spec:
                return _segment_out_shape(self.engine.spec, self.shapes["x"])
            return _run_spec(self.engine.spec, self._feeds(zeros=True))[name].shape

        def execute_async_v3(self, stream):
            assert self.scratch is not None and self.scratch[0]  # user-managed: scratch set first
            outs = _run_spec(self.engine.spec, self._feeds(zeros=False))
            assert not set(self.addr[n] for n in outs) & set(self.addr[n] for n in self.engine.inputs)
            for n, y in outs.items():
                y = np.ascontiguousarray(y, np.float32)
                ctypes.memmove(self.addr[n], y.ctypes.data, y.nbytes)
            x = self.engine.inputs[0]
            log.executed.append((self.engine.spec["name"], self.addr[x], self.addr[self.engine.outputs[0]],
                                 self.shapes[x]))
            return True

    class RuntimeConfig:
        def __init__(self):
            self.strategy = 0

        def set_execution_context_allocation_strategy(self, strategy):
            self.strategy = strategy

    class Engine:
        def __init__(self, spec):
            self.inputs, self.outputs, self.dims = ["x"], ["y"], {}
            if "onnx" in spec:  # I/O names and dims (-1 where dynamic) from the ONNX file
                sess = _ort_session(spec["onnx"])
                self.inputs = [i.name for i in sess.get_inputs()]
                self.outputs = [o.name for o in sess.get_outputs()]
                self.dims = {i.name: tuple(d if isinstance(d, int) else -1 for d in i.shape) for i in sess.get_inputs()}
                spec = {"name": Path(spec["onnx"]).stem, **spec}
            else:
                c, s = spec["cin"], spec["size"]
                self.dims = {"x": (-1, c, -1, s, s)}
            self.spec = spec
            self.num_io_tensors = len(self.inputs) + len(self.outputs)
            setattr(self, "device_memory_size_v2" if v2 else "device_memory_size", spec.get("scratch", 100))

        def get_tensor_name(self, i):
            return (self.inputs + self.outputs)[i]

        def get_tensor_mode(self, name):
            return "in" if name in self.inputs else "out"

        def get_tensor_dtype(self, name):
            return "float32"

        def get_tensor_shape(self, name):
            return self.dims[name]

        def get_tensor_profile_shape(self, name, profile):
            d = self.dims[name]
            lo = tuple(1 if x < 0 else x for x in d)
            hi = tuple(max_batch if i == 0 else num_frames if x < 0 else x for i, x in enumerate(d))
            return lo, hi, hi

        def create_execution_context(self, arg=0):
            if major >= 11:  # the strategy comes through a runtime config
                assert isinstance(arg, RuntimeConfig) and arg.strategy == 2
            else:
                assert arg == trt.ExecutionContextAllocationStrategy.USER_MANAGED
            return Context(self)

        if major >= 11:
            def create_runtime_config(self):
                return RuntimeConfig()

    trt.Runtime = lambda logger: types.SimpleNamespace(
        deserialize_cuda_engine=lambda data: Engine(json.loads(data.decode())))
    return trt


# slow_r50-like: stem, res2 fixed-ish (2 variants each, as --fold auto), two degradable stages, head
_CHAIN = [  # (segment, cin, cout, input size, pool, variants, choice over 4 configurations)
    ("stem", 3, 4, 16, 2, 2, [1, 0, 0, 0]),
    ("res4", 4, 6, 8, 1, 2, [1, 1, 0, 0]),
    ("res5", 6, 8, 8, 2, 2, [1, 0, 1, 0]),
    ("head", 8, 5, 4, 1, 1, [0, 0, 0, 0]),
]


def _write_chain_plans(tmp_path: Path) -> list:
    import json

    segments = []
    for s, (seg, cin, cout, size, pool, n, choice) in enumerate(_CHAIN):
        names = []
        for v in range(n):
            spec = {"name": f"{seg}_v{v}", "seed": 10 * s + v, "cin": cin, "cout": cout, "size": size,
                    "pool": pool, "head": seg == "head", "scratch": 1000 * (s + 1) + 7 * v}
            (tmp_path / f"{seg}_v{v}.plan").write_text(json.dumps(spec))
            names.append((f"{seg}_v{v}", spec))
        segments.append((seg, choice, names))
    return segments


@pytest.mark.parametrize("version", ["10.0.0", "10.8.0", "11.3.0"])
def test_trt_segment_chain(tmp_path: Path, monkeypatch, version: str) -> None:
    log, cudart = _ChainLog(), _FakeCudart()
    copies = []
    memcpy = cudart.cudaMemcpyAsync

    def spy(dst, src, nbytes, kind, stream):
        copies.append((kind, dst, src, nbytes))
        return memcpy(dst, src, nbytes, kind, stream)

    cudart.cudaMemcpyAsync = spy
    monkeypatch.setitem(sys.modules, "tensorrt", _fake_tensorrt_segments(version, 2, 4, log))
    monkeypatch.setattr(trt_backend, "import_cudart", lambda: cudart)
    segments = _write_chain_plans(tmp_path)
    with TrtBackend() as backend:
        for _, _, names in segments:
            for name, _ in names:
                backend.load(name, tmp_path / f"{name}.plan", {"model": "segment", "tensorrt_version": version,
                                                               "gpu_name": "Fake GPU"})
        chain = backend.add_chain("backbone", [(seg, choice, [n for n, _ in names]) for seg, choice, names in segments])
        assert backend.names == ["backbone"] and backend.input_names("backbone") == ["clip", "stage_mask"]
        # one scratch buffer, the largest engine's need, set on every context
        specs = [spec for _, _, names in segments for _, spec in names]
        assert backend.scratch_bytes == max(s["scratch"] for s in specs)
        assert len(log.contexts) == len(specs)
        ptrs = {c.scratch[0] for c in log.contexts}
        assert len(ptrs) == 1 and ptrs != {0}
        if version != "10.0.0":
            assert {c.scratch[1] for c in log.contexts} == {backend.scratch_bytes}
        # two ping-pong buffers sized for the largest boundary tensor at (max_batch, T)
        assert backend._ping_bytes == max(2 * cin * 4 * size * size * 4 for _, cin, _, size, *_ in _CHAIN)
        rng = np.random.default_rng(0)
        for mask in ("11", "10", "01", "00"):
            for batch, t in ((1, 4), (2, 3), (1, 1)):
                clip = rng.standard_normal((batch, 3, t, 16, 16)).astype(np.float32)
                log.executed.clear()
                copies.clear()
                got = backend.run("backbone", {"clip": clip, "stage_mask": np.array([int(c) for c in mask])})
                expected = clip
                pieces = chain.pieces(int(mask, 2))
                for seg, choice, names in segments:
                    expected = _segment_fn(names[choice[int(mask, 2)]][1])(expected)
                np.testing.assert_allclose(got["logits"], expected, rtol=1e-5, atol=1e-6)
                assert [e[0] for e in log.executed] == pieces
                ping = backend._ping
                assert [(e[1], e[2]) for e in log.executed] == [(ping[i % 2], ping[(i + 1) % 2])
                                                                for i in range(len(pieces))]
                assert log.executed[0][3] == clip.shape and log.executed[1][3] == (batch, 4, t, 8, 8)
                # host <-> device only at the chain's ends: the clip in, the logits out
                assert [(k, d in ping, s in ping) for k, d, s, _ in copies] == [(1, True, False), (2, False, True)]
        same = backend.run("backbone_10", {"clip": clip})["logits"]
        np.testing.assert_array_equal(same, backend.run("backbone", {"clip": clip, "stage_mask": [1, 0]})["logits"])
        with pytest.raises(ValueError, match="outside its engine's optimization profile"):
            backend.run("backbone", {"clip": np.zeros((1, 3, 5, 16, 16), np.float32), "stage_mask": [1, 1]})
        with pytest.raises(ValueError, match="buffer holds"):
            backend.run("backbone", {"clip": np.zeros((3, 3, 4, 16, 16), np.float32), "stage_mask": [1, 1]})
        with pytest.raises(ValueError, match="expected 2 values of 0/1"):
            backend.run("backbone", {"clip": clip, "stage_mask": [1, 0, 1]})
        with pytest.raises(KeyError, match="'stem_v0' is not loaded"):
            backend.run("stem_v0", {"x": clip})
    assert cudart.mem == {}  # scratch, ping-pong and staging buffers freed on close


def test_trt_segment_refuses_foreign_plan(tmp_path: Path, monkeypatch) -> None:
    log = _ChainLog()
    monkeypatch.setitem(sys.modules, "tensorrt", _fake_tensorrt_segments("10.8.0", 2, 4, log))
    monkeypatch.setattr(trt_backend, "import_cudart", _FakeCudart)
    _write_chain_plans(tmp_path)
    with TrtBackend() as backend:
        with pytest.raises(EngineMismatchError, match=r"stem_v0\.plan: built with TensorRT 10\.3\.0, this is "
                                                      r"TensorRT 10\.8\.0"):
            backend.load("stem_v0", tmp_path / "stem_v0.plan", {"model": "segment", "tensorrt_version": "10.3.0"})
        with pytest.raises(EngineMismatchError, match="built on GPU 'Orin'"):
            backend.load("stem_v0", tmp_path / "stem_v0.plan", {"model": "segment", "gpu_name": "Orin"})
        assert log.contexts == []  # refused before deserializing


def _add_segment_plans(bundle_dir: Path, gpu_name: str = "Fake GPU", version: str = "10.8.0") -> None:
    """A fake plan per segment variant of the bundle, running that variant's ONNX file."""
    import json

    bundle = open_bundle(bundle_dir)
    entries = []
    for seg in bundle.manifest.backbone.segments:
        for v, variant in enumerate(seg.variants):
            plan = f"{seg.name}_v{v}.plan"
            (bundle_dir / plan).write_text(json.dumps({"onnx": str(bundle_dir / variant.file), "scratch": 100 + v}))
            entries.append(TrtEngineEntry.for_file(bundle_dir, plan, model="segment", segment=seg.name, variant=v,
                                                   tensorrt_version=version, gpu_name=gpu_name, max_batch=2))
    add_trt_engines(bundle_dir, entries)


@pytest.mark.parametrize("version", ["10.0.0", "11.3.0"])
def test_trt_bundle_backbone_chain_equals_pytorch(tmp_path: Path, monkeypatch, version: str) -> None:
    """The chained segment engines of a real tiny backbone compute its PyTorch forward, per configuration."""
    from segment_bundle import make_segment_bundle, reference_logits

    bundle_dir, backbone = make_segment_bundle(tmp_path / "b")
    log, cudart = _ChainLog(), _FakeCudart()
    monkeypatch.setitem(sys.modules, "tensorrt", _fake_tensorrt_segments(version, 2, 8, log))
    monkeypatch.setattr(trt_backend, "import_cudart", lambda: cudart)
    with TrtBackend() as backend:
        with pytest.raises(Exception, match=r"no TensorRT plan for segment 'stem_v0'.*build-engines"):
            backend.load_bundle_backbone(open_bundle(bundle_dir))
        _add_segment_plans(bundle_dir, gpu_name="Orin", version=version)
        with pytest.raises(EngineMismatchError, match=r"stem_v0.*built on GPU 'Orin', this GPU is 'Fake GPU'"):
            backend.load_bundle_backbone(open_bundle(bundle_dir))
        _add_segment_plans(bundle_dir, version=version)  # rebuilt here: the same files, their entries replaced
        bundle = open_bundle(bundle_dir)
        assert len(bundle.manifest.trt_engines) == 11
        entry = backend.load_bundle_backbone(bundle)
        assert entry.max_batch == 2 and backend.names == ["backbone"]
        assert len({c.scratch[0] for c in log.contexts if c.scratch}) == 1
        rng = np.random.default_rng(0)
        for mask in bundle.masks:
            for batch, t in ((1, 8), (2, 4), (1, 1)):
                clip = rng.standard_normal((batch, 3, t, 16, 16)).astype(np.float32)
                log.executed.clear()
                got = backend.run("backbone", {"clip": clip, "stage_mask": np.array([int(c) for c in mask])})
                np.testing.assert_allclose(got["logits"], reference_logits(backbone, mask, clip), rtol=1e-4, atol=1e-4)
                index = int(mask, 2)
                assert [e[0] for e in log.executed] == [f"{seg.name}_v{seg.choice[index]}"
                                                        for seg in bundle.manifest.backbone.segments]
    assert cudart.mem == {}


def test_set_context_scratch_api_generations() -> None:
    from ada3d_edge.trt_api import engine_scratch_bytes, set_context_scratch

    class V2:  # TensorRT >= 10.1: set_device_memory(ptr, size)
        def set_device_memory(self, ptr, size):
            self.got = (ptr, size)

    class OneArg:  # a binding whose set_device_memory takes the pointer only
        device_memory = None

        def set_device_memory(self, ptr):  # called with (ptr, size): TypeError, then the attribute
            raise AssertionError("unreachable")

    class V10_0:  # TensorRT 10.0: the attribute
        device_memory = None

    v2, one, old = V2(), OneArg(), V10_0()
    set_context_scratch(v2, 4096, 512)
    set_context_scratch(one, 4096, 512)
    set_context_scratch(old, 4096, 512)
    assert (v2.got, one.device_memory, old.device_memory) == ((4096, 512), 4096, 4096)
    assert engine_scratch_bytes(types.SimpleNamespace(device_memory_size_v2=7, device_memory_size=3)) == 7
    assert engine_scratch_bytes(types.SimpleNamespace(device_memory_size=3)) == 3
