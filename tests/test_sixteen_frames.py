"""The paper's 16-frame setting end to end at toy size: train (upper -> policy -> joint) at T=16, export
a bundle with T' in 1..16, run the predictor and the bench on it, and compare with PyTorch."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from ada3d_edge import preprocess
from ada3d_edge.bundle import open_bundle
from ada3d_edge.cli import main
from ada3d_edge.export.exporter import export_bundle
from ada3d_edge.export.profiles import shape_profiles
from ada3d_edge.export.verify import frame_counts
from ada3d_edge.models import Actions
from ada3d_edge.runtime.bench import BenchOptions, run_bench
from ada3d_edge.runtime.predictor import AdaptivePredictor
from ada3d_edge.train.checkpoint import load_model
from ada3d_edge.train.config import recipe_from_dict
from ada3d_edge.train.trainer import train_stage
from test_export_utils import make_frames
from train_helpers import tiny_recipe

T = 16
torch.set_num_threads(1)


@pytest.fixture(scope="module")
def run16(tiny_synth_dataset, tmp_path_factory):
    """Tiny arch trained 1 epoch per stage at T=16 (the fixture's videos have 16 frames: stride 1)."""
    out = tmp_path_factory.mktemp("t16")
    recipe = recipe_from_dict(tiny_recipe(tiny_synth_dataset, out / "run", data={"num_frames": T, "stride": 1}))
    for stage in ("upper", "policy", "joint"):
        final = train_stage(recipe, stage, progress=False)
    bundle = export_bundle(final, out / "bundle", verify=True, progress=False)
    return final, bundle


def test_checkpoint_and_manifest_take_16_frames(run16):
    final, bundle = run16
    model, ckpt = load_model(final)
    assert model.num_frames == T and ckpt["data"]["num_frames"] == T
    assert model.selection.frame_head.out_features == T
    m = open_bundle(bundle).manifest
    assert m.num_frames == T and {c.mask for c in m.backbone.configs} == {"11", "10", "01", "00"}
    assert frame_counts(T) == [1, 8, 16]  # the export verified these T' against PyTorch
    (lo, opt, hi), = shape_profiles(m, max_batch=2)["backbone"].values()
    assert lo[2] == 1 and opt[2] == T and hi[2] == T  # TensorRT profile: T' in [1, 16]
    (plo, _, phi), = shape_profiles(m, max_batch=2)["policy"].values()
    assert plo[2] == phi[2] == T


def _inputs(frames, manifest):
    crops = preprocess.center_crop_frames(frames, manifest.crop_size, manifest.short_side)
    clip = torch.from_numpy(preprocess.to_clip_tensor(crops, manifest.mean, manifest.std))[None]
    policy = torch.from_numpy(preprocess.to_policy_tensor(crops, manifest.policy_size, manifest.mean,
                                                          manifest.std))[None]
    return clip, policy


def test_runtime_matches_pytorch_at_every_t_prime(run16):
    final, bundle = run16
    model, _ = load_model(final)
    rng = np.random.default_rng(0)
    with AdaptivePredictor(bundle, backend="ort", intra_op_threads=1) as predictor:
        m = predictor.manifest
        for kept in range(1, T + 1):  # every T' in 1..16, each under another stage mask
            keep = np.zeros(T, bool)
            keep[rng.choice(T, kept, replace=False)] = True
            mask = ["11", "10", "01", "00"][kept % 4]
            frames = make_frames(kept, T)
            pred = predictor.run_fixed(frames, keep, mask)
            assert pred.num_frames_kept == kept and pred.stage_mask == mask
            assert pred.scores.shape == (len(m.classes),)
            clip, _ = _inputs(frames, m)
            actions = Actions(torch.from_numpy(keep)[None], torch.tensor([[c == "1" for c in mask]]))
            with torch.no_grad():
                scores = torch.softmax(model(clip, actions).double(), 1)[0].numpy()
            np.testing.assert_allclose(pred.scores, scores, atol=1e-4, err_msg=f"T'={kept} mask={mask}")
            assert scores.max() - scores.min() > 1e-3  # a real comparison, not of uniform scores
        # greedy path: the runtime's actions are the PyTorch model's
        frames = make_frames(99, T)
        pred = predictor.predict(frames)
        clip, policy = _inputs(frames, m)
        with torch.no_grad():
            acts, fp, sp = model.select(policy, greedy=True, threshold=predictor.threshold)
        assert pred.frame_mask.shape == (T,) and pred.frame_probs.shape == (T,)
        assert 1 <= pred.num_frames_kept <= T
        np.testing.assert_allclose(pred.frame_probs, fp[0].numpy(), atol=1e-4)
        np.testing.assert_allclose(pred.stage_probs, sp[0].numpy(), atol=1e-4)
        if (torch.cat([fp, sp], 1) - predictor.threshold).abs().min() > 1e-4:
            np.testing.assert_array_equal(pred.frame_mask, acts.frames[0].numpy())


def test_bench_at_16_frames(run16, tmp_path):
    _, bundle = run16
    r = run_bench(bundle, "ort", BenchOptions(repeats=1, warmup=0, batch=1, clips=2, memory=False,
                                              masks=["11", "00"], frames=[1, 8, 16]), threads=1).to_json()
    rows = {(c["mask"], c["frames"]) for c in r["configs"] if c["mask"] != "policy"}
    assert rows == {(k, f) for k in ("11", "00") for f in (1, 8, 16)}
    upper = next(c for c in r["configs"] if c["mask"] == "11" and c["frames"] == T)
    assert upper["gflops_ratio"] == 1.0
    half = next(c for c in r["configs"] if c["mask"] == "11" and c["frames"] == 8)
    assert half["gflops_ratio"] == pytest.approx(0.5, abs=0.02)  # convs linear in T', the fc head once
    out = tmp_path / "b.json"
    res = CliRunner().invoke(main, ["bench", str(bundle), "--repeats", "1", "--warmup", "0", "--frames", "16",
                                    "--masks", "11", "--clips", "1", "--threads", "1", "--no-memory",
                                    "--json", str(out)])
    assert res.exit_code == 0, res.output
    assert {c["frames"] for c in json.loads(out.read_text())["configs"] if c["mask"] == "11"} == {T}
