"""AdaptivePredictor on a fake bundle: greedy actions, batching, start-up loading, scores."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from ada3d_edge import preprocess
from ada3d_edge.bundle import open_bundle
from ada3d_edge.runtime.backends.ort import OrtBackend
from ada3d_edge.runtime.predictor import AdaptivePredictor, Prediction, greedy_actions, logits_to_scores
from fake_bundle import CROP, NUM_FRAMES, fake_modules, make_clip, make_fake_bundle


class RecordingBackend(OrtBackend):
    """ORT backend that records every run as (name, input shape); the backbone's name carries the
    configuration it was fed (``backbone 10``)."""

    def __init__(self) -> None:
        super().__init__(intra_op_threads=1)
        self.calls: list[tuple[str, tuple]] = []

    def run(self, name, inputs):
        mask = inputs.get("stage_mask")
        label = name if mask is None else f"{name} {''.join(str(int(b)) for b in mask)}"
        self.calls.append((label, next(iter(inputs.values())).shape))
        return super().run(name, inputs)


@pytest.fixture(scope="module")
def bundle_dir(tmp_path_factory) -> Path:
    return make_fake_bundle(tmp_path_factory.mktemp("bundle"))


@pytest.fixture(scope="module")
def predictor(bundle_dir: Path):
    with AdaptivePredictor(bundle_dir, intra_op_threads=1) as p:
        yield p


def test_greedy_rule() -> None:
    u, v = greedy_actions(np.array([[0.9, 0.2, 0.6, 0.1], [0.3, 0.4, 0.1, 0.2]]), np.array([[0.7, 0.5], [0.1, 0.9]]))
    assert u.tolist() == [[True, False, True, False], [False, True, False, False]]  # row 2: argmax only
    assert v.tolist() == [[True, False], [False, True]]  # strictly greater than the threshold
    u, v = greedy_actions(np.array([0.9, 0.2, 0.6, 0.1]), np.array([0.7, 0.5]), threshold=0.95)
    assert u.tolist() == [[True, False, False, False]] and v.tolist() == [[False, False]]


def test_scores() -> None:
    s = logits_to_scores(np.array([[1.0, 2.0, 3.0]]))
    assert s.sum() == pytest.approx(1.0) and s.argmax() == 2
    assert logits_to_scores(np.array([0.0]), multi_label=True)[0] == pytest.approx(0.5)


def test_predict_follows_the_policy(predictor: AdaptivePredictor) -> None:
    keep = [True, False, True, True]
    pred = predictor.predict(make_clip(keep, "10"))
    assert isinstance(pred, Prediction)
    assert pred.frame_mask.tolist() == keep and pred.stage_mask == "10"
    assert pred.num_frames_kept == 3 and pred.num_3d_stages == 1
    assert pred.gflops == pytest.approx(2.0 * 3 + 0.01 * NUM_FRAMES)
    assert pred.scores.shape == (5,) and pred.scores.sum() == pytest.approx(1.0, abs=1e-5)
    top = pred.topk(2)
    assert len(top) == 2 and top[0][0] == pred.label and top[0][1] >= top[1][1]
    assert set(pred.timings_ms) == {"policy", "preprocess", "backbone", "total"}


def test_at_least_one_frame_and_threshold_knob(bundle_dir: Path, predictor: AdaptivePredictor) -> None:
    pred = predictor.predict(make_clip([False] * NUM_FRAMES, "00"))
    assert pred.num_frames_kept == 1 and pred.stage_mask == "00"
    clip = make_clip([True] * NUM_FRAMES, "11", frame_values=[127, 140, 127, 127])  # probs ~0.7-0.9
    assert predictor.predict(clip).num_frames_kept == 4
    with AdaptivePredictor(open_bundle(bundle_dir), threshold=0.85, warmup=False, intra_op_threads=1) as strict:
        pred = strict.predict(clip)
    assert pred.frame_mask.tolist() == [False, True, False, False]  # only the brightest passes 0.85
    with AdaptivePredictor(bundle_dir, threshold=0.999, warmup=False, intra_op_threads=1) as stricter:
        pred = stricter.predict(clip)
    assert pred.frame_mask.tolist() == [False, True, False, False]  # none passes: the argmax is kept
    assert pred.stage_mask == "11"


def test_batch_equals_single(predictor: AdaptivePredictor) -> None:
    specs = [([True, True, False, False], "11"), ([True, False, False, True], "11"), ([True] * 4, "00"),
             ([False, True, False, False], "01"), ([True, True, True, False], "10")]
    # frames larger than the crop and not square: exercises resize + centre crop
    clips = [np.pad(make_clip(k, m, seed=i), ((0, 0), (4, 4), (8, 8), (0, 0)), mode="edge")
             for i, (k, m) in enumerate(specs)]
    batch = predictor.predict_batch(clips)
    for clip, b, (keep, mask) in zip(clips, batch, specs):
        single = predictor.predict(clip)
        assert b.stage_mask == single.stage_mask == mask
        assert b.frame_mask.tolist() == single.frame_mask.tolist() == keep
        np.testing.assert_allclose(b.scores, single.scores, rtol=1e-5, atol=1e-6)
    assert predictor.predict_batch([]) == []


def test_groups_batched_and_no_reload(bundle_dir: Path) -> None:
    backend = RecordingBackend()
    predictor = AdaptivePredictor(bundle_dir, backend=backend)
    assert backend.load_count == 2 and sorted(backend.names) == ["backbone", "policy"]  # one model, all configs
    options = backend._sessions["backbone"].get_session_options()  # the manifest's ort_session settings
    assert options.enable_mem_pattern is False
    assert options.graph_optimization_level.name == "ORT_ENABLE_ALL"
    warm = set(backend.calls)
    assert warm == {("policy", (1, 3, 4, 8, 8))} | {
        (f"backbone {m}", (1, 3, t, CROP, CROP)) for m in ("00", "01", "10", "11") for t in range(1, 5)}
    backend.calls.clear()
    clips = [make_clip([True, True, False, False], "11", seed=1), make_clip([True, False, True, False], "11", seed=2),
             make_clip([True, True, True, True], "11", seed=3), make_clip([True, True, False, False], "01", seed=4)]
    predictor.predict_batch(clips)
    assert backend.calls[0] == ("policy", (4, 3, 4, 8, 8))  # one batched policy call
    assert sorted(backend.calls[1:]) == sorted([("backbone 11", (2, 3, 2, CROP, CROP)),
                                                ("backbone 11", (1, 3, 4, CROP, CROP)),
                                                ("backbone 01", (1, 3, 2, CROP, CROP))])
    predictor.predict(clips[0])
    predictor.run_fixed(clips[0], [True] * 4, "00")
    assert backend.load_count == 2  # never re-loaded after start-up
    predictor.close()
    assert backend.names  # a backend passed in is not closed by the predictor
    backend.close()


def test_run_fixed_matches_torch_reference(bundle_dir: Path, predictor: AdaptivePredictor) -> None:
    import torch

    clip = make_clip([True, True, True, True], "11", seed=7)
    u = np.array([False, True, True, False])
    pred = predictor.run_fixed(clip, u, [True, False])
    assert pred.stage_mask == "10" and pred.num_frames_kept == 2 and pred.gflops_policy == 0.0
    x = preprocess.to_clip_tensor(preprocess.center_crop_frames(clip, CROP)[u])[None]
    with torch.no_grad():
        logits = fake_modules()["backbone_10"](torch.from_numpy(x)).numpy()
    np.testing.assert_allclose(pred.scores, logits_to_scores(logits)[0], rtol=1e-5, atol=1e-6)
    scores, _ = predictor.classify([clip], u[None], "10")
    np.testing.assert_allclose(scores[0], pred.scores, rtol=1e-6)


def test_torch_backend_matches_ort(bundle_dir: Path, predictor: AdaptivePredictor) -> None:
    from ada3d_edge.torch_backend import TorchBackend

    clips = [make_clip([True, False, True, True], "01", seed=3), make_clip([False, True, False, False], "10", seed=5)]
    with TorchBackend.from_modules(fake_modules()) as backend:
        torch_pred = AdaptivePredictor(bundle_dir, backend=backend, warmup=False)
        for a, b in zip(torch_pred.predict_batch(clips), predictor.predict_batch(clips)):
            assert a.stage_mask == b.stage_mask and a.frame_mask.tolist() == b.frame_mask.tolist()
            np.testing.assert_allclose(a.scores, b.scores, rtol=1e-5, atol=1e-6)


def test_multi_label_uses_sigmoid(tmp_path: Path) -> None:
    bundle_dir = make_fake_bundle(tmp_path / "ml", multi_label=True)
    with AdaptivePredictor(bundle_dir, warmup=False, intra_op_threads=1) as p:
        pred = p.predict(make_clip([True] * 4, "11"))
    assert np.all((pred.scores > 0) & (pred.scores < 1)) and pred.scores.sum() != pytest.approx(1.0)


def test_bad_input_is_a_value_error(predictor: AdaptivePredictor) -> None:
    clip = make_clip([True] * 4, "11")
    with pytest.raises(ValueError, match=r"\(T=4, H, W, 3\)"):
        predictor.predict(clip[:3])
    with pytest.raises(ValueError, match="uint8"):
        predictor.predict(clip.astype(np.float32))
    with pytest.raises(ValueError, match="at least one True"):
        predictor.run_fixed(clip, [False] * 4, "11")
    with pytest.raises(ValueError, match="valid masks"):
        predictor.run_fixed(clip, [True] * 4, "111")
    with pytest.raises(ValueError, match="threshold"):
        AdaptivePredictor(predictor.bundle, threshold=1.5)
    with pytest.raises(ValueError, match="unknown backend kind 'onnx'; valid kinds"):
        AdaptivePredictor(predictor.bundle, backend="onnx")
