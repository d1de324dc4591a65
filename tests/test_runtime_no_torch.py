"""The runtime imports and runs with torch made unimportable (what goes on the device)."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

from fake_bundle import make_clip, make_fake_bundle

REPO = Path(__file__).resolve().parents[1]
MODULES = ["ada3d_edge.bundle", "ada3d_edge.preprocess", "ada3d_edge.runtime", "ada3d_edge.runtime.backends",
           "ada3d_edge.runtime.predictor", "ada3d_edge.runtime.backends.trt", "ada3d_edge.runtime.backends.ort",
           "ada3d_edge.torch_backend"]


def _run_without_torch(code: str) -> subprocess.CompletedProcess:
    prelude = "import sys\nsys.modules['torch'] = None  # any `import torch` now raises ImportError\n"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
    return subprocess.run([sys.executable, "-c", prelude + textwrap.dedent(code)], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=120)


def test_runtime_imports_and_predicts_without_torch(tmp_path: Path) -> None:
    runtime_dir = REPO / "ada3d_edge" / "runtime"  # every runtime module, including the stream ones
    modules = sorted(set(MODULES) | {".".join(p.relative_to(REPO).with_suffix("").parts).removesuffix(".__init__")
                                     for p in runtime_dir.rglob("*.py")})
    bundle_dir = make_fake_bundle(tmp_path / "bundle")
    clip_path = tmp_path / "clip.npy"
    import numpy as np

    np.save(clip_path, make_clip([True, False, True, True], "10"))
    result = _run_without_torch(f"""
        import importlib, json
        import numpy as np
        for name in {modules!r}:
            importlib.import_module(name)
        from ada3d_edge.runtime.predictor import AdaptivePredictor
        with AdaptivePredictor({str(bundle_dir)!r}, intra_op_threads=1) as p:
            pred = p.predict(np.load({str(clip_path)!r}))
        print(json.dumps({{"stage_mask": pred.stage_mask, "kept": pred.num_frames_kept,
                          "torch_loaded": sys.modules.get("torch") is not None}}))
    """)
    assert result.returncode == 0, result.stderr
    out = json.loads(result.stdout.strip().splitlines()[-1])
    assert out == {"stage_mask": "10", "kept": 3, "torch_loaded": False}


def test_torch_backend_says_it_needs_torch() -> None:
    result = _run_without_torch("""
        from ada3d_edge.runtime.backends import make_backend
        try:
            make_backend("torch", modules={})
        except ImportError as exc:
            print("ImportError", exc)
    """)
    assert result.returncode == 0, result.stderr
    assert "ImportError the 'torch' backend needs PyTorch" in result.stdout
