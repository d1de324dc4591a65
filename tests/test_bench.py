"""`ada3d bench` on the fake bundle: JSON keys, one row per configuration, ratios, failures as statuses."""
from __future__ import annotations

import itertools
import json
import shutil
import time
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from fake_bundle import NUM_FRAMES, make_fake_bundle

from ada3d_edge.bundle import open_bundle
from ada3d_edge.cli import main
from ada3d_edge.runtime.backends.ort import OrtBackend
from ada3d_edge.runtime.bench import BenchOptions, run_bench
from ada3d_edge.runtime.bench_report import format_table, plot

TINY = {"repeats": 2, "warmup": 1, "batch": 2, "clips": 3}


def bench(bundle, backend="ort", command=None, **options) -> dict:
    """run_bench with 1 intra-op thread and ``BenchOptions(**options)``; the result as JSON."""
    return run_bench(bundle, backend, BenchOptions(**options), threads=1, command=command).to_json()


@pytest.fixture(scope="module")
def bundle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_fake_bundle(tmp_path_factory.mktemp("bench") / "bundle")


@pytest.fixture(scope="module")
def result(bundle: Path) -> dict:
    return bench(bundle, "ort", memory=True, command="test", **TINY)


def test_json_keys(result: dict) -> None:
    assert result["upper"]["gflops"] == pytest.approx(3.0 * NUM_FRAMES)  # fake: (1 + #3D) GFLOPs a frame
    for section in ("upper", "adaptive"):
        assert set(result[section]["latency_ms"]) >= {"mean", "p50", "p95"}
        assert "accuracy" in result[section] and result[section]["gflops"] > 0
    assert result["adaptive"]["status"] == "ok" and result["adaptive"]["accuracy"] is None  # noise: no labels
    assert result["policy"]["latency_ms"]["mean"] > 0 and result["policy"]["fraction_of_upper"] > 0
    mem = result["memory_mb"]
    assert mem["all_engines"] > 0 and mem["upper_only"] > 0, mem["detail"]
    assert mem["unit"] == "PSS" and mem["source"] == "smaps_rollup"  # Linux: PSS, not RSS
    assert mem["all_engines_uss"] > 0 and mem["detail"]["all"]["configs"] == 4 and mem["detail"]["upper"]["configs"] == 1
    assert mem["detail"]["all"]["rss_mb"] >= mem["all_engines"] >= mem["all_engines_uss"]
    machine = result["machine"]
    assert {"cpu", "cores", "os", "onnxruntime", "backend", "threads"} <= set(machine) and machine["threads"] == 1
    assert result["command"] == "test" and "generated" in result["clips"]
    assert set(result["targets"]) == {"saving_efficiency", "policy_fraction", "p95_no_worse"}
    json.dumps(result)  # JSON-ready


def test_every_config_row_and_upper_ratio(result: dict) -> None:
    rows = result["configs"]
    keys = {(r["mask"], r["frames"], r["batch"]) for r in rows}
    assert keys == {(m, t, b) for m in ("00", "01", "10", "11") for t in range(1, NUM_FRAMES + 1) for b in (1, 2)}
    for r in rows:
        assert r["status"] == "ok" and r["latency_ms"]["n"] == TINY["repeats"]
        assert set(r) >= {"gflops", "gflops_ratio", "latency_ratio", "p95_ratio"}
    for b in (1, 2):
        upper = next(r for r in rows if r["mask"] == "11" and r["frames"] == NUM_FRAMES and r["batch"] == b)
        assert upper["gflops_ratio"] == 1.0 and upper["latency_ratio"] == 1.0
    small = next(r for r in rows if r["mask"] == "00" and r["frames"] == 1 and r["batch"] == 1)
    assert small["gflops_ratio"] == pytest.approx(1.0 / 12.0)


def test_table_and_plot(result: dict, tmp_path: Path) -> None:
    text = format_table(result)
    assert "selection net" in text and "Upper" in text and "target policy_fraction" in text
    png = plot(result, tmp_path / "lat.png")
    assert png.read_bytes()[:4] == b"\x89PNG"


class FlakyBackend(OrtBackend):
    """Fails on one configuration: the backbone fed ``stage_mask`` 01, at T' = 2."""

    def run(self, name, inputs):
        mask = inputs.get("stage_mask")
        if name == "backbone" and list(mask) == [0, 1] and next(iter(inputs.values())).shape[2] == 2:
            raise RuntimeError("injected failure")
        return super().run(name, inputs)


def test_failing_config_becomes_status(bundle: Path) -> None:
    r = bench(bundle, FlakyBackend(intra_op_threads=1), memory=False, masks=["01", "11"], frames=[2, 4],
                  **{**TINY, "clips": 1})
    status = {(c["mask"], c["frames"], c["batch"]): c["status"] for c in r["configs"]}
    assert status[("01", 2, 1)].startswith("error: RuntimeError: injected failure")
    assert status[("01", 2, 2)].startswith("error:")
    assert all(s == "ok" for k, s in status.items() if k[:2] != ("01", 2))
    assert "injected failure" in format_table(r)


def test_corrupt_engine_becomes_status(bundle: Path, tmp_path: Path) -> None:
    broken = shutil.copytree(bundle, tmp_path / "broken")
    path = broken / "backbone.weights"  # every configuration's weights
    path.write_bytes(b"\0" * path.stat().st_size)  # same size: only the sha256 tells
    r = bench(broken, "ort", memory=False, masks=["10", "11"], frames=[NUM_FRAMES], **TINY)
    status = {(c["mask"], c["batch"]): c["status"] for c in r["configs"]}
    assert "backbone.weights: sha256" in status[("10", 1)] and "sha256" in status[("11", 1)]
    assert r["policy"]["latency_ms"]["mean"] > 0  # the selection net's file is intact: still timed
    assert r["adaptive"]["status"].startswith("error") and r["adaptive"]["latency_ms"] is None
    format_table(r)


def test_list_data_gives_accuracy(tiny_synth_dataset: Path, tmp_path: Path) -> None:
    names = [f"c{i}" for i in range(8)]
    b = make_fake_bundle(tmp_path / "b8", classes=names, crop_size=16, policy_size=8)
    r = bench(b, "ort", memory=False, data=str(tiny_synth_dataset / "val.txt"), root=str(tiny_synth_dataset),
                  masks=["11"], frames=[NUM_FRAMES], **{**TINY, "clips": 4})
    assert "centre clips" in r["clips"]
    assert 0.0 <= r["adaptive"]["accuracy"] <= 1.0 and 0.0 <= r["upper"]["accuracy"] <= 1.0


def test_cli(bundle: Path, tmp_path: Path) -> None:
    out, png = tmp_path / "r.json", tmp_path / "r.png"
    res = CliRunner().invoke(main, ["bench", str(bundle), "--repeats", "1", "--warmup", "0", "--batch", "2",
                                    "--frames", "1,4", "--masks", "11,00", "--clips", "2", "--threads", "1",
                                    "--no-memory", "--json", str(out), "--plot", str(png)])
    assert res.exit_code == 0, res.output
    r = json.loads(out.read_text())
    assert len(r["configs"]) == 2 * 2 * 2 and png.is_file()
    assert r["command"].startswith("main bench") or r["command"].startswith("ada3d bench")
    assert "--masks 11,00" in r["command"] and r["memory_mb"] is None


def test_cli_bad_mask(bundle: Path) -> None:
    res = CliRunner().invoke(main, ["bench", str(bundle), "--masks", "111", "--no-memory"])
    assert res.exit_code != 0 and "--masks ['111'] not in this bundle" in res.output


def test_clips_are_streamed_one_at_a_time(bundle: Path) -> None:
    import weakref

    from ada3d_edge.runtime.bench import bench_adaptive
    from ada3d_edge.runtime.clips import generated_clips
    from ada3d_edge.runtime.predictor import AdaptivePredictor

    t0 = time.perf_counter()
    many = generated_clips(open_bundle(bundle, verify=False), 100_000)
    assert len(many) == 100_000 and time.perf_counter() - t0 < 1.0  # nothing materialised
    first = next(iter(many))[0]
    assert np.array_equal(first, next(iter(many))[0])  # clip i is the same on every pass

    alive: list[weakref.ref] = []
    most = [0]

    class Watched:
        def __len__(self) -> int:
            return 12

        def __iter__(self):
            for i, clip in enumerate(itertools.islice(many, 12)):
                alive.append(weakref.ref(clip[0]))
                most[0] = max(most[0], sum(r() is not None for r in alive))
                yield clip

    with AdaptivePredictor(bundle, intra_op_threads=1, warmup=False) as predictor:
        out = bench_adaptive(predictor, Watched(), passes=2, warmup=1, progress=True)
    assert most[0] <= 2, f"{most[0]} clips alive at once"
    assert out["adaptive"]["latency_ms"].n == 24 and sum(out["adaptive"]["chosen"].values()) == 12


def test_progress_bar_over_clips(bundle: Path, capsys) -> None:
    bench(bundle, "ort", memory=False, masks=["11"], frames=[NUM_FRAMES], progress=True, **TINY)
    assert "adaptive vs Upper" in capsys.readouterr().err


def test_table_says_costs_more_instead_of_negative_savings(result: dict) -> None:
    import copy

    r = copy.deepcopy(result)
    r["adaptive"].update({"latency_saving": -0.118, "gflops_saving": -0.05, "saving_efficiency": None})
    r["targets"]["saving_efficiency"].update({"value": None, "met": None})
    text = format_table(r)
    assert "latency costs 11.8% more, GFLOPs costs 5.0% more (efficiency n/a: no GFLOPs saved)" in text
    assert "saves -" not in text and "efficiency -" not in text and ": - (" not in text
    r["adaptive"].update({"latency_saving": 0.25, "gflops_saving": 0.3, "saving_efficiency": 0.25 / 0.3})
    assert "latency saves 25.0%, GFLOPs saves 30.0% (efficiency 0.83)" in format_table(r)


def test_torch_reference_backend_is_a_picklable_factory(tmp_path: Path) -> None:
    import pickle

    pytest.importorskip("torch")
    from export_helpers import make_checkpoint

    from ada3d_edge.bench_torch import torch_backend_factory
    from ada3d_edge.runtime.bench import backend_factory

    ckpt = make_checkpoint(tmp_path / "ck.pt", "slow_tiny", 4, 32)
    factory = pickle.loads(pickle.dumps(backend_factory(torch_backend_factory(ckpt, threads=1), None, 1)))
    with factory() as be:
        assert be.kind == "torch"
        for name in ("policy", "backbone"):
            be.load(name, "unused")
        clip = np.random.default_rng(0).standard_normal((1, 3, 2, 32, 32)).astype(np.float32)
        out = {m: be.run("backbone", {"clip": clip, "stage_mask": np.array([int(c) for c in m], np.int64)})
               for m in ("00", "11")}
        assert out["11"]["logits"].shape[0] == 1
        assert not np.allclose(out["00"]["logits"], out["11"]["logits"])  # the mask feed selects the configuration


def test_cli_lut_is_every_configuration_normalised_to_upper(bundle: Path, tmp_path: Path) -> None:
    from ada3d_edge.latency_lut import read_lut

    out, lut_path = tmp_path / "r.json", tmp_path / "lut.json"
    res = CliRunner().invoke(main, ["bench", str(bundle), "--repeats", "2", "--warmup", "0", "--batch", "1",
                                    "--clips", "2", "--threads", "1", "--no-memory", "--json", str(out),
                                    "--lut", str(lut_path)])
    assert res.exit_code == 0, res.output
    r, lut = json.loads(out.read_text()), read_lut(lut_path)
    rows = {(c["mask"], c["frames"]): c["latency_ms"]["p50"] for c in r["configs"] if c["batch"] == 1}
    assert set(lut.cost) == set(rows) and len(rows) == 4 * NUM_FRAMES
    ref = rows[("11", NUM_FRAMES)]
    assert lut.cost == pytest.approx({k: v / ref for k, v in rows.items()}) and lut.cost[("11", NUM_FRAMES)] == 1.0
    assert (lut.arch, lut.num_frames, lut.crop_size) == (r["arch"], r["num_frames"], r["crop_size"])
    assert lut.upper_gflops == pytest.approx(r["upper"]["gflops"])
    assert lut.backend and lut.threads == 1 and lut.machine["cpu"] == r["machine"]["cpu"]
    again = CliRunner().invoke(main, ["bench", str(bundle), "--repeats", "1", "--warmup", "0", "--clips", "1",
                                      "--no-memory", "--lut", str(lut_path)])
    assert again.exit_code == 0, again.output  # its own kind of file: replaced


def test_cli_lut_refuses_subsets_and_foreign_files(bundle: Path, tmp_path: Path) -> None:
    res = CliRunner().invoke(main, ["bench", str(bundle), "--masks", "11", "--lut", str(tmp_path / "l.json")])
    assert res.exit_code != 0 and "--lut needs every mask at every T'" in res.output
    other = tmp_path / "notes.json"
    other.write_text("{}")
    res = CliRunner().invoke(main, ["bench", str(bundle), "--no-memory", "--lut", str(other)])
    assert res.exit_code != 0 and "is not a latency table" in res.output and other.read_text() == "{}"


def test_memory_is_pss_and_falls_back_to_labelled_rss(tmp_path: Path) -> None:
    from ada3d_edge.runtime.bench import process_memory_mb
    from ada3d_edge.runtime.bench_report import _memory

    here = process_memory_mb()
    assert here["source"] == "smaps_rollup" and 0 < here["uss"] <= here["pss"] <= here["rss"]
    status = tmp_path / "status"
    status.write_text("VmHWM:\t  2048 kB\nVmRSS:\t  1024 kB\n")
    no_smaps = process_memory_mb(str(tmp_path / "absent"), str(status))
    assert no_smaps == {"rss": 1.0, "peak_rss": 2.0, "source": "status (RSS only: no smaps_rollup)"}
    mem = _memory({"all": {"rss_mb": 30.0, "source": no_smaps["source"]}, "upper": {"rss_mb": 20.0}})
    assert mem["unit"] == "RSS" and mem["ratio"] == pytest.approx(1.5) and "no /proc/self/smaps_rollup" in mem["note"]
    mem = _memory({"all": {"pss_mb": 30.0, "rss_mb": 90.0}, "upper": {"pss_mb": 25.0, "rss_mb": 40.0}})
    assert mem["unit"] == "PSS" and mem["all_engines"] == 30.0 and mem["ratio"] == pytest.approx(1.2)


def test_selection_net_is_timed_as_the_runtime_runs_it(tmp_path: Path) -> None:
    """A bundle with the split selection net: the bench's selection row times the split path (frame
    terms, mean, heads) the predictor runs, and says so; without a split, the whole policy.onnx."""
    import torch

    from ada3d_edge.models import SelectionNet
    from ada3d_edge.models.specs import selection_spec
    from ada3d_edge.bundle import open_bundle
    from ada3d_edge.runtime.bench import split_policy_runner

    torch.manual_seed(0)
    net = SelectionNet(NUM_FRAMES, 2, spec=selection_spec(0.35, 16, 1, 2, 64)).eval()
    split = make_fake_bundle(tmp_path / "split", policy_size=16, selection=net)
    r = bench(split, memory=False, repeats=2, warmup=0, batch=2, clips=2)
    assert r["settings"]["selection_net"] == "split (frame terms, mean, numpy heads)"
    assert r["policy"]["latency_ms"]["p50"] > 0 and "split (frame terms" in format_table(r)
    calls = []

    class Recorder:
        def run(self, name, inputs):
            calls.append((name, {k: v.shape for k, v in inputs.items()}))
            if name == "policy_features":
                return {"features": np.zeros((len(inputs["frames"]), NUM_FRAMES + 2), np.float32)}
            return {"frame_probs": np.zeros((2, NUM_FRAMES), np.float32), "stage_probs": np.zeros((2, 2), np.float32)}

    x = {"frames": np.zeros((2, NUM_FRAMES, 3, 16, 16), np.float32)}
    split_policy_runner(open_bundle(split))(Recorder(), x)  # heads in numpy: one call
    assert calls == [("policy_features", {"frames": (2 * NUM_FRAMES, 3, 16, 16)})]
    calls.clear()
    no_bias = make_fake_bundle(tmp_path / "no_bias", policy_size=16, selection=net, head_bias=False)
    split_policy_runner(open_bundle(no_bias))(Recorder(), x)  # an older bundle: the heads file too
    assert calls == [("policy_features", {"frames": (2 * NUM_FRAMES, 3, 16, 16)}),
                     ("policy_heads", {"features": (2, NUM_FRAMES + 2)})]
    assert bench(make_fake_bundle(tmp_path / "whole"), memory=False, repeats=1, warmup=0, clips=1)[
        "settings"]["selection_net"] == "whole policy"
