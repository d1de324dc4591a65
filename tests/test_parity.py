"""Parity: the runtime on an exported bundle (ONNX Runtime) computes what the PyTorch Ada3D computes.

Same clip, same preprocessing functions (``ada3d_edge.preprocess``), same actions -> same scores;
and the runtime's greedy actions equal ``Ada3D.select(greedy=True)``.
"""
from __future__ import annotations

import numpy as np
import pytest
import torch

from ada3d_edge import preprocess
from ada3d_edge.export.exporter import export_bundle
from ada3d_edge.models import Actions
from ada3d_edge.runtime.predictor import AdaptivePredictor
from ada3d_edge.train.checkpoint import load_model
from test_export_utils import make_checkpoint, make_frames

T, CROP, P = 4, 32, 32


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("parity")
    ckpt = make_checkpoint(root / "slow.pt", "slow_tiny", T, CROP, P, seed=3)
    bundle = export_bundle(ckpt, root / "bundle", verify=False, progress=False)
    model, _ = load_model(ckpt)
    with AdaptivePredictor(bundle, backend="ort") as predictor:
        yield model, predictor


def _frames(seed: int) -> np.ndarray:
    return make_frames(seed, T)


def _torch_inputs(frames: np.ndarray, manifest):
    crops = preprocess.center_crop_frames(frames, manifest.crop_size, manifest.short_side)
    clip = torch.from_numpy(preprocess.to_clip_tensor(crops, manifest.mean, manifest.std))[None]
    policy = torch.from_numpy(preprocess.to_policy_tensor(crops, manifest.policy_size, manifest.mean,
                                                          manifest.std))[None]
    return clip, policy


@pytest.mark.parametrize("keep, mask", [
    ((1, 1, 1, 1), "11"), ((1, 1, 1, 1), "00"), ((1, 0, 1, 0), "10"), ((0, 1, 1, 1), "01"),
    ((0, 0, 1, 0), "11"), ((1, 0, 0, 1), "00"),
])
def test_run_fixed_matches_pytorch(setup, keep, mask):
    model, predictor = setup
    frames = _frames(sum(keep) * 7 + int(mask, 2))
    pred = predictor.run_fixed(frames, [bool(k) for k in keep], mask)
    clip, _ = _torch_inputs(frames, predictor.manifest)
    actions = Actions(torch.tensor([keep], dtype=torch.bool), torch.tensor([[c == "1" for c in mask]]))
    with torch.no_grad():
        scores = torch.softmax(model(clip, actions).double(), 1)[0].numpy()
    assert pred.num_frames_kept == sum(keep) and pred.stage_mask == mask
    np.testing.assert_allclose(pred.scores, scores, atol=1e-4)
    assert abs(scores.max() - scores.min()) > 1e-3  # a real comparison, not of uniform scores


def test_greedy_actions_and_scores_match_pytorch(setup):
    model, predictor = setup
    seen_masks, seen_counts = set(), set()
    for seed in range(8):
        frames = _frames(100 + seed)
        clip, policy = _torch_inputs(frames, predictor.manifest)
        with torch.no_grad():
            acts, fp, sp = model.select(policy, greedy=True, threshold=predictor.threshold)
            scores = torch.softmax(model(clip, acts).double(), 1)[0].numpy()
        if (torch.cat([fp, sp], 1) - predictor.threshold).abs().min() < 1e-4:
            continue  # a probability on the threshold may round either way in ORT
        pred = predictor.predict(frames)
        np.testing.assert_array_equal(pred.frame_mask, acts.frames[0].numpy())
        assert pred.stage_mask == "".join("1" if b else "0" for b in acts.stages[0].tolist())
        np.testing.assert_allclose(pred.frame_probs, fp[0].numpy(), atol=1e-4)
        np.testing.assert_allclose(pred.stage_probs, sp[0].numpy(), atol=1e-4)
        np.testing.assert_allclose(pred.scores, scores, atol=1e-4)
        seen_masks.add(pred.stage_mask)
        seen_counts.add(pred.num_frames_kept)
    assert len(seen_masks) > 1 and len(seen_counts) > 1  # the clips exercised more than one action


def _every_configuration_matches(model, predictor, num_frames: int, crop: int, masks=None) -> None:
    """The runtime's backbone (one session, the mask as a feed) = PyTorch, every config x T' x batch."""
    from ada3d_edge.export.verify import RTOL, frame_counts
    from ada3d_edge.runtime.predictor import stage_mask_feed

    gen = torch.Generator().manual_seed(11)
    for mask in masks or predictor.bundle.masks:
        for t in frame_counts(num_frames):
            for batch in (1, 2):
                clip = torch.randn(batch, 3, t, crop, crop, generator=gen)
                with torch.no_grad():
                    ref = model.backbone(clip, mask).double().numpy()
                got = predictor.backend.run("backbone", {"clip": clip.numpy(),
                                                         "stage_mask": stage_mask_feed(mask)})["logits"]
                bound = RTOL * max(1.0, float(np.abs(ref).max()))
                assert float(np.abs(got - ref).max()) <= bound, (mask, t, batch)


def test_every_configuration_of_the_one_graph_matches_pytorch(setup):
    model, predictor = setup
    assert model.backbone.bn_calibrated.all()  # per-configuration BN statistics, as the recipes make
    _every_configuration_matches(model, predictor, T, CROP)


@pytest.mark.parametrize("arch", [pytest.param("i3d_tiny", marks=pytest.mark.slow)])
def test_every_configuration_matches_pytorch_i3d_tiny(tmp_path, arch):
    ckpt = make_checkpoint(tmp_path / f"{arch}.pt", arch, T, CROP, P, seed=4)
    bundle = export_bundle(ckpt, tmp_path / "bundle", verify=False, progress=False)
    model, _ = load_model(ckpt)
    with AdaptivePredictor(bundle, backend="ort", warmup=False) as predictor:
        assert len(predictor.bundle.masks) == 32
        _every_configuration_matches(model, predictor, T, CROP)
