"""`ada3d export` and `ada3d build-engines` on bad inputs: one `Error:` line, non-zero exit, no
traceback, and nothing outside the command's own output changed (issue 11, item 6)."""
from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner

from ada3d_edge.cli import main
from ada3d_edge.train.checkpoint import read_checkpoint, save_checkpoint
from fake_bundle import make_fake_bundle
from export_helpers import make_checkpoint


def _snapshot(root: Path) -> dict:
    """Every path under ``root`` with its bytes (files) and mtime: what 'unchanged' means here."""
    return {str(p.relative_to(root)): (p.read_bytes() if p.is_file() else None, p.stat().st_mtime_ns)
            for p in sorted(root.rglob("*"))}


def _run_fails(args: list, root: Path, exit_code: int, *needles: str) -> str:
    """Run ``ada3d ARGS``; check the failure's form and that nothing under ``root`` or under the
    folders of the arguments that are paths (checkpoints, bundles) changed."""
    roots = {root, *(Path(a).parent for a in args if isinstance(a, Path))}
    before = {r: _snapshot(r) for r in roots}
    res = CliRunner().invoke(main, [str(a) for a in args])
    out = res.output
    assert res.exit_code == exit_code, out
    assert isinstance(res.exception, SystemExit), repr(res.exception)  # not an uncaught exception
    assert "Traceback" not in out, out
    lines = [line for line in out.splitlines() if line.strip()]
    assert sum(line.startswith("Error:") for line in lines) == 1 and lines[-1].startswith("Error:"), out
    for needle in needles:
        assert needle in lines[-1], (needle, out)
    assert {r: _snapshot(r) for r in roots} == before, "the command changed files outside its output"
    return lines[-1]


@pytest.fixture(scope="module")
def inputs(tmp_path_factory) -> Path:
    """A folder with a good tiny checkpoint, broken ones, and a fake bundle."""
    root = tmp_path_factory.mktemp("inputs")
    good = make_checkpoint(root / "good.pt")
    data = good.read_bytes()
    (root / "noise.pt").write_bytes(bytes(range(256)) * 8)
    (root / "truncated.pt").write_bytes(data[: len(data) // 2])
    torch.save({"state_dict": {}}, root / "foreign.pt")
    ckpt = read_checkpoint(good)
    del ckpt["data"]["stride"]
    save_checkpoint(root / "no_stride.pt", {k: v for k, v in ckpt.items() if k not in ("format", "version")})
    (root / "a_file").write_text("not a directory")
    make_fake_bundle(root / "bundle")
    return root


# --- export ------------------------------------------------------------------------------------

@pytest.mark.parametrize("ckpt, exit_code, needles", [
    ("missing.pt", 2, ["missing.pt", "does not exist"]),
    ("noise.pt", 1, ["cannot read checkpoint", "noise.pt"]),
    ("truncated.pt", 1, ["cannot read checkpoint", "truncated.pt"]),
    ("foreign.pt", 1, ["foreign.pt is not an ada3d checkpoint"]),
    ("no_stride.pt", 1, ["no_stride.pt", "stride"]),
    (".", 2, ["is a directory"]),
])
def test_export_bad_checkpoint(inputs, tmp_path, ckpt, exit_code, needles):
    out = tmp_path / "out"
    _run_fails(["export", inputs / ckpt, "--out", out, "--quiet"], tmp_path, exit_code, *needles)
    assert not out.exists()


@pytest.mark.parametrize("extra, needles", [
    (["--opset", "16"], ["--opset"]),
    (["--opset", "seventeen"], ["--opset"]),
    (["--opset", "99"], ["opset 99", "--opset 17.."]),
    (["--fold", "sometimes"], ["--fold", "auto"]),
    (["--local-weights", "1.5"], ["--local-weights", "1.5"]),
    (["--local-weights", "-0.1"], ["--local-weights"]),
])
def test_export_bad_options(inputs, tmp_path, extra, needles):
    code = 1 if extra[-1] == "99" else 2  # 99 passes click's range; the exporter names its limit
    _run_fails(["export", inputs / "good.pt", "--out", tmp_path / "out", "--quiet", *extra], tmp_path, code, *needles)
    assert not (tmp_path / "out").exists()


def test_export_bad_out(inputs, tmp_path):
    (tmp_path / "file").write_text("x")
    _run_fails(["export", inputs / "good.pt", "--out", tmp_path / "file", "--quiet"], tmp_path, 2,
               "is a file", "--out")
    _run_fails(["export", inputs / "good.pt", "--out", tmp_path / "file" / "b", "--quiet"], tmp_path, 2,
               "is a file", "--out")
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "data.txt").write_text("keep")
    _run_fails(["export", inputs / "good.pt", "--out", tmp_path / "mine", "--quiet"], tmp_path, 2, "--overwrite")
    _run_fails(["export", inputs / "good.pt", "--out", tmp_path / "mine", "--quiet", "--overwrite"], tmp_path, 2,
               "not an ada3d bundle")


# --- build-engines -----------------------------------------------------------------------------

@pytest.fixture
def no_tensorrt(monkeypatch):
    monkeypatch.setitem(sys.modules, "tensorrt", None)  # `import tensorrt` raises ImportError


@pytest.fixture
def bundle(inputs, tmp_path) -> Path:
    import shutil

    return Path(shutil.copytree(inputs / "bundle", tmp_path / "bundle"))


def _edit(bundle: Path, text: str) -> None:
    (bundle / "manifest.json").write_text(text)


@pytest.mark.parametrize("case, exit_code, needles", [
    ("missing", 2, ["does not exist"]),
    ("file", 2, ["is a file"]),
    ("empty", 1, ["no bundle manifest", "ada3d export"]),
    ("bad_json", 1, ["manifest.json", "not valid JSON"]),
    ("foreign", 1, ["not an ada3d bundle"]),
    ("modified", 1, ["backbone.weights", "sha256 mismatch"]),
    ("deleted", 1, ["policy.onnx", "missing from bundle"]),
])
def test_build_engines_bad_bundle(no_tensorrt, bundle, tmp_path, case, exit_code, needles):
    target = bundle
    if case == "missing":
        target = tmp_path / "nowhere"
    elif case == "file":
        target = bundle / "policy.onnx"
    elif case == "empty":
        target = tmp_path / "empty"
        target.mkdir()
    elif case == "bad_json":
        _edit(bundle, "{not json")
    elif case == "foreign":
        _edit(bundle, json.dumps({"format": "something-else"}))
    elif case == "modified":
        data = bytearray((bundle / "backbone.weights").read_bytes())
        data[-1] ^= 0xFF  # same size, other bytes
        (bundle / "backbone.weights").write_bytes(bytes(data))
    elif case == "deleted":
        (bundle / "policy.onnx").unlink()
    _run_fails(["build-engines", target, "--fp16"], tmp_path, exit_code, *needles)


def test_build_engines_without_tensorrt_names_what_to_install(no_tensorrt, bundle, tmp_path):
    _run_fails(["build-engines", bundle, "--fp16"], tmp_path, 1, "pip install ada3d-edge[trt]", "JetPack")


@pytest.mark.parametrize("extra, needles", [
    (["--fp16", "--int8"], ["one of --fp16 and --int8"]),
    (["--int8"], ["--calib"]),
    (["--int8", "--calib", "nowhere.txt"], ["--calib"]),
    (["--workspace", "0"], ["--workspace"]),
    (["--max-batch", "x"], ["--max-batch"]),
    (["--device", "cpu"], ["--device", "cuda:N"]),
    (["--profile", "missing.yaml"], ["--profile"]),
    (["--profile", "PROFILE"], ["precision 'fp8' unknown"]),
])
def test_build_engines_bad_options(no_tensorrt, bundle, tmp_path, extra, needles):
    profile = tmp_path / "bad.yaml"
    profile.write_text("precision: fp8\n")
    extra = [str(profile) if a == "PROFILE" else a for a in extra]
    code = 1 if extra[:1] == ["--device"] else 2
    _run_fails(["build-engines", bundle, *extra], tmp_path, code, *needles)


def test_build_engines_bad_calib_list(no_tensorrt, bundle, tmp_path):
    (tmp_path / "calib.txt").write_text("just-one-field\n")
    _run_fails(["build-engines", bundle, "--int8", "--calib", tmp_path / "calib.txt"], tmp_path, 1,
               "calib.txt:1", "2 fields")
