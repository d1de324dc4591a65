"""`ada3d run` and `ada3d bench` on bad input: exit 1/2, one `Error:` line naming the file or option
and the fix, no traceback, and nothing outside the command's own output touched."""
from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path
from typing import Callable

import pytest
from click.testing import CliRunner

from ada3d_edge.cli import main
from fake_bundle import make_fake_bundle
from stream_helpers import make_clip


@pytest.fixture(scope="module")
def good_bundle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_fake_bundle(tmp_path_factory.mktemp("errors") / "bundle")


def _snapshot(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest() if p.is_file() else "dir"
            for p in sorted(root.rglob("*"))}


def _empty(b: Path) -> None:
    (b / "manifest.json").unlink()


def _bad_json(b: Path) -> None:
    (b / "manifest.json").write_text("{not json", encoding="utf-8")


def _deleted(b: Path) -> None:
    (b / "backbone.weights").unlink()


def _modified(b: Path) -> None:
    path = b / "backbone_shared.onnx"
    path.write_bytes(b"\0" * path.stat().st_size)  # same size: only the sha256 tells


BUNDLE_DAMAGE: dict[str, tuple[Callable[[Path], None], str]] = {
    "missing manifest": (_empty, "no bundle manifest here"),
    "bad JSON": (_bad_json, "not valid JSON"),
    "deleted file": (_deleted, "backbone.weights: missing from bundle"),
    "modified file": (_modified, "backbone_shared.onnx: sha256 mismatch"),
}


def _invoke(args: list[str], root: Path, outputs: tuple[str, ...] = ()) -> tuple[int, list[str], str]:
    """Run the CLI; check no traceback and no file changed under ``root`` but ``outputs``."""
    before = _snapshot(root)
    result = CliRunner().invoke(main, args)
    text = result.output  # stdout and stderr
    assert result.exception is None or isinstance(result.exception, SystemExit), f"not a clean exit: {result.exception!r}\n{text}"
    assert "Traceback" not in text
    after = _snapshot(root)
    changed = {k for k in set(before) | set(after) if before.get(k) != after.get(k)}
    assert changed <= set(outputs), f"files changed outside the command's output: {changed - set(outputs)}"
    errors = [ln for ln in text.splitlines() if ln.startswith("Error:")]
    return result.exit_code, errors, text


@pytest.mark.parametrize("command", ["run", "bench"])
@pytest.mark.parametrize("damage", list(BUNDLE_DAMAGE))
def test_bundle_errors_are_one_line(command: str, damage: str, good_bundle: Path, tmp_path: Path) -> None:
    bundle = shutil.copytree(good_bundle, tmp_path / "bundle")
    hurt, expected = BUNDLE_DAMAGE[damage]
    hurt(bundle)
    clip = make_clip(tmp_path / "clip.mp4", num_frames=20)
    if command == "run":
        args = ["run", str(bundle), "--source", str(clip), "--jsonl", str(tmp_path / "out.jsonl")]
    else:
        args = ["bench", str(bundle), "--repeats", "1", "--warmup", "0", "--clips", "1", "--no-memory",
                "--threads", "1"]
    if command == "bench" and damage == "modified file":
        code, errors, text = _invoke(args, tmp_path)  # the bench reports a broken configuration as a row
        assert code == 0 and expected in text and "error:" in text
        return
    code, errors, text = _invoke(args, tmp_path)
    assert code == 1 and len(errors) == 1, text
    assert expected in errors[0] and ("ada3d export" in errors[0] or "re-export" in errors[0]), errors[0]


@pytest.mark.parametrize("command", ["run", "bench"])
@pytest.mark.parametrize("options, expected", [
    (["--device", "cuda"], "pip install onnxruntime-gpu"),
    (["--backend", "trt"], "pip install ada3d-edge[trt]"),
])
def test_missing_libraries_are_one_line(command: str, options: list[str], expected: str, good_bundle: Path,
                                        tmp_path: Path) -> None:
    pytest.importorskip("onnxruntime")
    if "--backend" in options:
        try:
            import tensorrt  # noqa: F401
            pytest.skip("tensorrt is installed here")
        except ImportError:
            pass
    clip = make_clip(tmp_path / "clip.mp4", num_frames=20)
    extra = ["--source", str(clip)] if command == "run" else ["--no-memory", "--repeats", "1"]
    code, errors, text = _invoke([command, str(good_bundle), *options, *extra], tmp_path)
    if "--device" in options and "CUDAExecutionProvider" in __import__("onnxruntime").get_available_providers():
        pytest.skip("this onnxruntime has CUDA")
    assert code == 1 and len(errors) == 1 and expected in errors[0], text


@pytest.mark.parametrize("overlay", ["out", "out.txt"])
def test_overlay_without_a_video_extension_is_refused_before_running(overlay: str, good_bundle: Path,
                                                                    tmp_path: Path) -> None:
    clip = make_clip(tmp_path / "clip.mp4", num_frames=20)
    jsonl = tmp_path / "out.jsonl"
    code, errors, text = _invoke(["run", str(good_bundle), "--source", str(clip), "--overlay",
                                  str(tmp_path / overlay), "--jsonl", str(jsonl)], tmp_path)
    assert code == 1 and len(errors) == 1, text
    assert "--overlay" in errors[0] and ".mp4" in errors[0] and "ada3d run:" not in text  # nothing ran
    assert not jsonl.exists()


def test_missing_source_file_is_a_usage_error(good_bundle: Path, tmp_path: Path) -> None:
    code, errors, text = _invoke(["run", str(good_bundle), "--source", str(tmp_path / "nope.mp4")], tmp_path)
    assert code == 2 and len(errors) == 1 and "--source" in errors[0] and "check the path" in errors[0], text


def test_dead_source_exits_one_naming_it(good_bundle: Path, tmp_path: Path) -> None:
    code, errors, text = _invoke(["run", str(good_bundle), "--source", "http://127.0.0.1:9/x",
                                  "--open-attempts", "1"], tmp_path)
    assert code == 1 and len(errors) == 1 and "http://127.0.0.1:9/x" in errors[0], text
    assert "connection refused" in errors[0]


def test_bench_bad_masks(good_bundle: Path, tmp_path: Path) -> None:
    code, errors, text = _invoke(["bench", str(good_bundle), "--masks", "111", "--no-memory"], tmp_path)
    assert code == 1 and len(errors) == 1 and "--masks ['111'] not in this bundle; valid" in errors[0], text


def test_bench_json_result_is_the_only_output(good_bundle: Path, tmp_path: Path) -> None:
    out = tmp_path / "r.json"
    code, errors, text = _invoke(["bench", str(good_bundle), "--repeats", "1", "--warmup", "0", "--clips", "1",
                                  "--frames", "4", "--no-memory", "--threads", "1", "--json", str(out)],
                                 tmp_path, outputs=("r.json",))
    assert code == 0 and not errors and json.loads(out.read_text())["configs"], text


def test_run_offers_only_backends_that_run_from_a_bundle(good_bundle: Path, tmp_path: Path) -> None:
    from ada3d_edge.runtime.backends import BACKENDS, backend_kinds

    runnable = [k for k, spec in BACKENDS.items() if spec.runs_bundle]
    assert backend_kinds(runs_bundle=True) == runnable and "torch" not in runnable
    help_text = CliRunner().invoke(main, ["run", "--help"]).output
    assert f"[{'|'.join(runnable)}]" in help_text
    bench_help = CliRunner().invoke(main, ["bench", "--help"]).output
    assert f"[{'|'.join(BACKENDS)}]" in bench_help  # the bench rebuilds torch modules from --checkpoint
    code, errors, text = _invoke(["run", str(good_bundle), "--backend", "torch", "--source", "0"], tmp_path)
    assert code == 2 and len(errors) == 1 and "--backend" in errors[0] and "'torch' is not one of" in errors[0]


@pytest.mark.parametrize("option, value", [("--frames", "1,,8"), ("--frames", "1,x"), ("--masks", "11,,00")])
def test_bench_bad_lists_are_refused(option: str, value: str, good_bundle: Path, tmp_path: Path) -> None:
    code, errors, text = _invoke(["bench", str(good_bundle), option, value, "--no-memory"], tmp_path)
    assert code == 2 and len(errors) == 1 and option in errors[0] and value in errors[0], text
    assert "like 1,4,8" in errors[0] or "like 11,00" in errors[0]
