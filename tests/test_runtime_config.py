"""`ada3d run --config`: the committed multi-camera config (runtime/cameras.yaml) run against a
loopback HTTP stream, config errors as one line, command-line options over the file, the unit."""
from __future__ import annotations

import configparser
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner

from ada3d_edge.cli import main
from ada3d_edge.runtime.config import ConfigError, load_run_config, resolve_run
from fake_bundle import make_fake_bundle
from stream_helpers import FFMPEG, free_port, make_clip, start_http_server, stop_process, wait_port

ROOT = Path(__file__).resolve().parents[1]
CAMERAS = ROOT / "runtime" / "cameras.yaml"


@pytest.fixture(scope="module")
def bundle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_fake_bundle(tmp_path_factory.mktemp("cfg") / "bundle")


def test_committed_config_reads_with_per_source_options() -> None:
    cfg = load_run_config(CAMERAS)
    assert cfg.bundle == "/opt/ada3d/bundle" and cfg.run["backend"] == "trt" and cfg.run["queue_size"] == 4
    assert [src for src, _ in cfg.sources] == ["rtsp://192.168.1.21:554/stream1",
                                               "rtsp://192.168.1.22:554/stream1", 0]
    _, entries, options = resolve_run("/", [], {"threads": 1, "open_attempts": 3}, set(), cfg)
    assert options.backend == "trt" and options.threads == 1 and options.source.open_timeout_s == 10
    assert entries[1].options.resize == (640, 360) and entries[2].options.open_attempts == 1
    assert entries[0].options.max_reconnects is None and entries[0].options.open_attempts == 3


def test_command_line_wins_over_the_file(tmp_path: Path) -> None:
    cfg = load_run_config(CAMERAS)
    _, entries, options = resolve_run("/", ["0"], {"backend": "ort", "open_attempts": 5},
                                      {"backend", "open_attempts"}, cfg)
    assert options.backend == "ort" and [e.src for e in entries] == ["0"]
    assert entries[0].options is None and options.source.open_attempts == 5  # every CLI source: the base


@pytest.mark.skipif(FFMPEG is None, reason="ffmpeg not installed (apt-get install ffmpeg)")
def test_committed_config_runs_on_a_loopback_stream(bundle: Path, tmp_path: Path) -> None:
    clip = make_clip(tmp_path / "clip.mp4", num_frames=50)
    port = free_port()
    server = start_http_server(clip, port)
    try:
        assert wait_port(port, 10), "ffmpeg did not start listening"
        data = yaml.safe_load(CAMERAS.read_text())
        url = f"http://127.0.0.1:{port}/live.ts"
        data.update(bundle=str(bundle), backend="ort", device="cpu", jsonl=str(tmp_path / "out.jsonl"),
                    max_windows=4, duration=60)
        data["sources"] = [{**data["sources"][1], "src": url}]  # the second camera's options, on our stream
        config = tmp_path / "cameras.yaml"
        config.write_text(yaml.safe_dump(data))
        env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(ROOT))
        proc = subprocess.run([sys.executable, "-m", "ada3d_edge.cli", "run", "--config", str(config)], cwd=tmp_path,
                              env=env, capture_output=True, text=True, timeout=120)
    finally:
        stop_process(server)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    records = [json.loads(line) for line in (tmp_path / "out.jsonl").read_text().splitlines()]
    assert len(records) == 4 and all(r["source"] == url for r in records)
    assert "stopped: max_windows" in proc.stdout and "Traceback" not in proc.stderr


@pytest.mark.parametrize("text, expected", [
    ("backend: ort\nsources: [0]\nbogus: 1\n", "unknown key(s) ['bogus']"),
    ("sources:\n  - src: 0\n    resize: 640\n", "resize must be [width, height]"),
    ("sources:\n  - {url: 0}\n", "sources[0] must be a SRC or a mapping with 'src'"),
    ("defaults: {open_timout: 3}\nsources: [0]\n", "unknown key 'open_timout'"),
    ("backend: [ort\n", "not valid YAML"),
    ("sources: [0]\n", "no bundle given"),
])
def test_config_errors_are_one_line(text: str, expected: str, tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError, match=None):
        resolve_run(None, [], {}, set(), load_run_config(path))
    res = CliRunner().invoke(main, ["run", "--config", str(path)])
    errors = [ln for ln in res.output.splitlines() if ln.startswith("Error:")]
    assert res.exit_code == 1 and len(errors) == 1 and expected in errors[0] and str(path) in errors[0], res.output


def test_run_without_bundle_or_source_says_how() -> None:
    res = CliRunner().invoke(main, ["run"])
    assert res.exit_code == 1 and "Error: no bundle given: pass BUNDLE (or --config FILE)" in res.output


def test_systemd_unit_runs_the_config_and_restarts_on_failure() -> None:
    unit = configparser.ConfigParser(strict=False, interpolation=None)
    unit.read(ROOT / "runtime" / "ada3d-run.service")
    service = unit["Service"]
    assert service["ExecStart"].endswith("ada3d run --config /opt/ada3d/cameras.yaml")
    assert service["Restart"] == "on-failure" and int(service["RestartSec"]) > 0
    assert service["KillSignal"] == "SIGTERM" and unit["Install"]["WantedBy"] == "multi-user.target"
    assert "network-online.target" in unit["Unit"]["After"]
