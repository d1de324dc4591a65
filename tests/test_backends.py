"""Backends: ONNX Runtime on the fake bundle, factory errors, and TensorRT without TensorRT.

TensorRT and a GPU are absent here: the TensorRT backend is tested for its lazy-import error,
its refusal of foreign plans, and (with fake ``tensorrt``/``cudart`` modules that keep "device"
memory on the host) its buffer handling, through the predictor.
"""
from __future__ import annotations

import ctypes
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
from fake_bundle import fake_modules, make_clip, make_fake_bundle


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


def _fake_tensorrt(max_batch: int) -> types.ModuleType:
    """A ``tensorrt`` whose plans name a fake-bundle module; execution runs it in torch."""
    import torch

    modules = fake_modules()
    trt = types.ModuleType("tensorrt")
    trt.__version__ = "10.0.0"
    trt.TensorIOMode = types.SimpleNamespace(INPUT="in", OUTPUT="out")
    trt.Logger = type("Logger", (), {"WARNING": 2, "__init__": lambda self, level=2: None})
    trt.nptype = lambda dtype: np.float32

    class Context:
        def __init__(self, engine):
            self.engine, self.shapes, self.addr = engine, {}, {}

        def set_input_shape(self, name, shape):
            self.shapes[name] = tuple(shape)
            return shape[0] <= max_batch

        def set_tensor_address(self, name, ptr):
            self.addr[name] = ptr

        def get_tensor_shape(self, name):
            return self.shapes[name] if name in self.shapes else self._outputs()[name].shape

        def _outputs(self):
            (name,) = self.engine.inputs
            shape = self.shapes[name]
            x = np.zeros(shape, np.float32) if name not in self.addr else np.ctypeslib.as_array(
                (ctypes.c_float * int(np.prod(shape))).from_address(self.addr[name])).reshape(shape)
            with torch.no_grad():
                out = modules[self.engine.model](torch.from_numpy(x.copy()))
            out = out if isinstance(out, tuple) else (out,)
            return dict(zip(self.engine.outputs, (o.numpy() for o in out)))

        def execute_async_v3(self, stream):
            for name, arr in self._outputs().items():
                ctypes.memmove(self.addr[name], arr.ctypes.data, arr.nbytes)
            return True

    class Engine:
        def __init__(self, model):
            self.model = model
            self.inputs = ["frames"] if model == "policy" else ["clip"]
            self.outputs = ["frame_probs", "stage_probs"] if model == "policy" else ["logits"]
            self.num_io_tensors = len(self.inputs) + len(self.outputs)

        def get_tensor_name(self, i):
            return (self.inputs + self.outputs)[i]

        def get_tensor_mode(self, name):
            return "in" if name in self.inputs else "out"

        def get_tensor_dtype(self, name):
            return "float32"

        def get_tensor_shape(self, name):
            return (-1, 3, 4, 8, 8) if self.model == "policy" else (-1, 3, -1, 16, 16)

        def get_tensor_profile_shape(self, name, profile):
            t_min = 4 if self.model == "policy" else 1
            size = 8 if self.model == "policy" else 16
            return (1, 3, t_min, size, size), (1, 3, 4, size, size), (max_batch, 3, 4, size, size)

        def create_execution_context(self):
            return Context(self)

    trt.Runtime = lambda logger: types.SimpleNamespace(
        deserialize_cuda_engine=lambda data: Engine(data.decode()))
    return trt


def _add_fake_plans(bundle_dir: Path, gpu_name: str = "Fake GPU") -> None:
    entries = []
    for name in ["policy", "backbone_00", "backbone_01", "backbone_10", "backbone_11"]:
        (bundle_dir / f"{name}.plan").write_bytes(name.encode())
        entries.append(TrtEngineEntry.for_file(bundle_dir, f"{name}.plan", mask=name.replace("backbone_", ""),
                                               tensorrt_version="10.0.0", gpu_name=gpu_name, max_batch=2))
    add_trt_engines(bundle_dir, entries)


def test_trt_backend_with_fake_tensorrt(tmp_path: Path, monkeypatch) -> None:
    cudart = _FakeCudart()
    monkeypatch.setitem(sys.modules, "tensorrt", _fake_tensorrt(max_batch=2))
    monkeypatch.setattr(trt_backend, "import_cudart", lambda: cudart)
    bundle_dir = make_fake_bundle(tmp_path / "bundle")
    _add_fake_plans(bundle_dir)
    clips = [make_clip(keep, mask, seed=i) for i, (keep, mask) in enumerate([
        ([True, True, False, False], "11"), ([True, False, True, False], "11"),
        ([False, True, True, False], "11"), ([True, True, True, True], "01")])]
    with AdaptivePredictor(bundle_dir, intra_op_threads=1) as ort_pred:
        expected = ort_pred.predict_batch(clips)
    with AdaptivePredictor(bundle_dir, backend="trt") as trt_pred:
        assert trt_pred.max_batch == 2  # from the plans' max_batch: 3 clips of one group run as 2 + 1
        assert "TensorRT 10.0.0 on Fake GPU" in trt_pred.backend.describe()
        got = trt_pred.predict_batch(clips)
        for a, b in zip(got, expected):
            assert a.stage_mask == b.stage_mask and a.frame_mask.tolist() == b.frame_mask.tolist()
            np.testing.assert_allclose(a.scores, b.scores, rtol=1e-5, atol=1e-6)
        with pytest.raises(ValueError, match=r"\(3, 3, 4, 16, 16\) \(36864 bytes\) but its buffer holds 24576 bytes"):
            trt_pred.backend.run("backbone_11", {"clip": np.zeros((3, 3, 4, 16, 16), np.float32)})
        assert trt_pred.backend.peak_memory_mb() == pytest.approx(1024.0)
    assert cudart.mem == {}  # every host and device buffer freed on close


def test_trt_predictor_refuses_plans_from_another_gpu(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setitem(sys.modules, "tensorrt", _fake_tensorrt(max_batch=2))
    monkeypatch.setattr(trt_backend, "import_cudart", _FakeCudart)
    bundle_dir = make_fake_bundle(tmp_path / "bundle")
    with pytest.raises(Exception, match=r"no TensorRT plan for 'policy'.*build-engines"):
        AdaptivePredictor(bundle_dir, backend="trt")
    _add_fake_plans(bundle_dir, gpu_name="Orin")
    assert open_bundle(bundle_dir).trt_engines("policy")[0].gpu_name == "Orin"
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
