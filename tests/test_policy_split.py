"""The split selection network (per-frame features, heads) and the per-source feature cache of streams.

Split == unsplit: the exported pieces composed as the runtime composes them give the PyTorch
``SelectionNet.forward``. Cached == uncached: stream windows that reuse cached frame features get
exactly the probabilities of the same windows computed from scratch, across a reconnect (the ring
buffer's reset) and across windows the queue dropped.
"""
from __future__ import annotations

import json
import threading

import numpy as np
import pytest
import torch

from ada3d_edge.bundle import (POLICY_FEATURES, POLICY_INPUT, POLICY_OUTPUTS, PolicySplit, open_bundle,
                               read_manifest, write_manifest)
from ada3d_edge.export.onnx_export import export_policy_split
from ada3d_edge.export.verify import VerificationError, ort_session, verify_policy_split
from ada3d_edge.runtime.app import RunOptions, run_streams
from ada3d_edge.runtime.feature_cache import FeatureCache, StreamFrames
from ada3d_edge.runtime.predictor import AdaptivePredictor
from ada3d_edge.runtime.scheduler import Scheduler
from ada3d_edge.runtime.sources import ClipBuffer, DropOldestQueue, EndOfStream, SourceSpec, SourceStats, Window
from ada3d_edge.train.checkpoint import load_model
from fake_bundle import CROP, NUM_FRAMES, make_fake_bundle
from stream_helpers import make_clip
from export_helpers import make_checkpoint

P = 16  # policy input size


@pytest.fixture(scope="module")
def selection(tmp_path_factory):
    """A tiny trained-looking SelectionNet (T=4, K=2, width 0.35) whose greedy actions vary."""
    ckpt = make_checkpoint(tmp_path_factory.mktemp("ckpt") / "m.pt", "slow_tiny", NUM_FRAMES, CROP, policy_size=P)
    model, _ = load_model(ckpt)
    return model.selection.eval()


@pytest.fixture(scope="module")
def split_bundle(selection, tmp_path_factory):
    return make_fake_bundle(tmp_path_factory.mktemp("split") / "bundle", policy_size=P, selection=selection)


@pytest.fixture(scope="module")
def predictor(split_bundle):
    with AdaptivePredictor(split_bundle, intra_op_threads=1) as p:
        yield p


def _frames(seed: int, n: int, h: int = 20, w: int = 24) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (n, h, w, 3), dtype=np.uint8)


@pytest.mark.parametrize("batch", [1, 2])
def test_split_equals_unsplit_network(selection, tmp_path, batch):
    x = torch.randn(batch, 3, NUM_FRAMES, P, P, generator=torch.Generator().manual_seed(batch))
    images = x.transpose(1, 2).reshape(batch * NUM_FRAMES, 3, P, P)
    with torch.no_grad():
        ref = [r.numpy() for r in selection(x)]
        split = selection.heads(selection.image_features(images).reshape(batch, NUM_FRAMES, -1).mean(1))
        projection, bias = selection.head_terms()  # the heads as one affine map of the frame features
        terms = (selection.image_features(images) @ projection).reshape(batch, NUM_FRAMES, -1).mean(1) + bias
        folded = (torch.sigmoid(terms[:, :NUM_FRAMES]), torch.sigmoid(terms[:, NUM_FRAMES:]))
    for g, r in zip(folded, ref):
        np.testing.assert_allclose(g.numpy(), r, rtol=0, atol=1e-5)
    for g, r in zip(split, ref):  # the split computes the same function (PyTorch, float32)
        np.testing.assert_allclose(g.numpy(), r, rtol=0, atol=1e-5)
    # The ONNX pair composed as the runtime does (numpy mean): within float32 noise. This net's
    # heads are scaled to be sensitive: PyTorch float32 itself is 4e-5 off its float64 forward.
    feats_path, heads_path = export_policy_split(selection, tmp_path / "f.onnx", tmp_path / "h.onnx", P)
    images = images.numpy()
    feats = ort_session(feats_path).run([POLICY_FEATURES], {POLICY_INPUT: images})[0]
    assert feats.shape == (batch * NUM_FRAMES, NUM_FRAMES + selection.num_stages)  # the heads' terms per frame
    mean = feats.reshape(batch, NUM_FRAMES, -1).mean(axis=1, dtype=np.float32)
    got = ort_session(heads_path).run(list(POLICY_OUTPUTS), {POLICY_FEATURES: mean})
    for g, r in zip(got, ref):
        assert g.shape == r.shape
        np.testing.assert_allclose(g, r, rtol=0, atol=1e-4)
    assert 0.05 < ref[0].std() + ref[1].std()  # probabilities that differ: the check can fail


def test_verify_policy_split_catches_a_wrong_heads_file(selection, tmp_path):
    feats_path, heads_path = export_policy_split(selection, tmp_path / "f.onnx", tmp_path / "h.onnx", P)
    assert 0 <= verify_policy_split(feats_path, heads_path, selection, NUM_FRAMES, P) < 1e-2  # no error raised
    other = type(selection)(NUM_FRAMES, 2, spec=selection.spec).eval()  # other weights
    export_policy_split(other, tmp_path / "f2.onnx", tmp_path / "h2.onnx", P)
    with pytest.raises(VerificationError, match="policy split"):
        verify_policy_split(feats_path, tmp_path / "h2.onnx", selection, NUM_FRAMES, P)


def test_manifest_lists_the_split_and_old_bundles_run_whole(split_bundle, tmp_path, predictor):
    m = open_bundle(split_bundle).manifest  # every sha256 checked, the split files included
    assert m.policy_split.features.file == "policy_features.onnx" and m.policy_split.heads.file == "policy_heads.onnx"
    assert m.policy_split.num_features == predictor.bundle.manifest.policy_split.num_features > 0
    assert json.loads((split_bundle / "manifest.json").read_text())["policy_split"]["num_features"] > 0
    assert predictor.caches_features and predictor.split_policy
    old = make_fake_bundle(tmp_path / "old")  # no policy_split: the whole policy.onnx runs
    with AdaptivePredictor(old, warmup=False) as p:
        assert not p.caches_features and "policy_features" not in p.backend.names
    with pytest.raises(ValueError, match="no policy_split"):
        AdaptivePredictor(old, warmup=False, split_policy=True)
    # the split and the whole policy give the same actions (probabilities within float error)
    with AdaptivePredictor(split_bundle, split_policy=False, warmup=False) as whole:
        clips = [_frames(s, NUM_FRAMES) for s in range(6)]
        for a, b in zip(predictor.predict_batch(clips), whole.predict_batch(clips)):
            np.testing.assert_allclose(a.frame_probs, b.frame_probs, atol=1e-4)
            np.testing.assert_allclose(a.stage_probs, b.stage_probs, atol=1e-4)


def test_malformed_policy_split_is_refused_by_name(split_bundle, tmp_path):
    import shutil

    from ada3d_edge.bundle import BundleError

    copy = tmp_path / "b"
    shutil.copytree(split_bundle, copy)
    data = json.loads((copy / "manifest.json").read_text())
    data["policy_split"].pop("heads")
    (copy / "manifest.json").write_text(json.dumps(data))
    with pytest.raises(BundleError, match="'policy_split' must be an object with"):
        read_manifest(copy)
    (copy / "policy_heads.onnx").write_bytes(b"x")
    data = json.loads((split_bundle / "manifest.json").read_text())
    (copy / "manifest.json").write_text(json.dumps(data))
    with pytest.raises(BundleError, match="policy_heads.onnx"):
        open_bundle(copy)
    m = read_manifest(split_bundle)
    assert isinstance(m.policy_split, PolicySplit)
    write_manifest(copy, m)  # round trip
    assert read_manifest(copy).policy_split == m.policy_split


def test_numpy_heads_equal_the_heads_file_and_skip_its_call(split_bundle, selection, tmp_path, predictor):
    """A bundle that records the heads' bias runs them in numpy (no policy_heads call, not loaded);
    the probabilities equal the heads file's, and a bundle without the bias still runs the file."""
    from ada3d_edge.export.onnx_export import head_bias
    from ada3d_edge.runtime.split_heads import numpy_heads

    m = read_manifest(split_bundle)
    assert m.policy_split.head_bias == pytest.approx(head_bias(selection))
    assert "policy_heads" not in predictor.backend.names and predictor._heads.in_numpy
    terms = np.random.default_rng(0).standard_normal((3, m.policy_split.num_features)).astype(np.float32)
    ref = ort_session(split_bundle / "policy_heads.onnx").run(list(POLICY_OUTPUTS), {POLICY_FEATURES: terms})
    for got, want in zip(numpy_heads(terms, m.policy_split.head_bias, NUM_FRAMES), ref):
        assert got.dtype == np.float32 and got.shape == want.shape
        np.testing.assert_allclose(got, want, rtol=0, atol=1e-6)
    old = make_fake_bundle(tmp_path / "no_bias", policy_size=P, selection=selection, head_bias=False)
    assert "head_bias" not in json.loads((old / "manifest.json").read_text())["policy_split"]
    with AdaptivePredictor(old, intra_op_threads=1) as engine_heads:
        assert "policy_heads" in engine_heads.backend.names and not engine_heads._heads.in_numpy
        clips = [_frames(s, NUM_FRAMES) for s in range(6)]
        for a, b in zip(predictor.predict_batch(clips), engine_heads.predict_batch(clips)):
            np.testing.assert_allclose(a.frame_probs, b.frame_probs, rtol=0, atol=1e-6)
            np.testing.assert_allclose(a.stage_probs, b.stage_probs, rtol=0, atol=1e-6)
            assert a.stage_mask == b.stage_mask and list(a.frame_mask) == list(b.frame_mask)


@pytest.mark.parametrize("bias, message", [([0.0], "must be a list of"), (["x"] * (NUM_FRAMES + 2), "must be a list of"),
                                           ([float("nan")] * (NUM_FRAMES + 2), "finite")])
def test_bad_head_bias_is_refused(split_bundle, tmp_path, bias, message):
    from ada3d_edge.bundle import BundleError

    data = json.loads((split_bundle / "manifest.json").read_text())
    data["policy_split"]["head_bias"] = bias
    (tmp_path / "manifest.json").write_text(json.dumps(data))
    with pytest.raises(BundleError, match=message):
        read_manifest(tmp_path)


def test_head_bias_needs_t_plus_k_features(split_bundle, tmp_path):
    from ada3d_edge.bundle import BundleError

    data = json.loads((split_bundle / "manifest.json").read_text())
    n = NUM_FRAMES + 3
    data["policy_split"].update(num_features=n, head_bias=[0.0] * n)
    (tmp_path / "manifest.json").write_text(json.dumps(data))
    with pytest.raises(BundleError, match="num_features = T \\+ K"):
        read_manifest(tmp_path)


def _windows(seq_frames: np.ndarray, hop: int, reset_at: int) -> list[Window]:
    """Windows of a ClipBuffer (stride 1) over ``seq_frames``, the buffer reset before frame ``reset_at``."""
    buf, out = ClipBuffer(NUM_FRAMES, 1, hop), []
    for i, frame in enumerate(seq_frames):
        if i == reset_at:
            buf.reset()  # what a reconnect does
        clip = buf.push(frame)
        if clip is not None:
            out.append(Window("s", 0, clip, 0.0, i, len(out), buf.last_new_frames, 0.0, 0.0,
                              buf.frame_ids, buf.generation))
    return out


class _QueuedReader:
    """A reader stand-in whose queue already holds its windows and end marker."""

    def __init__(self, windows: list[Window]) -> None:
        self.spec = SourceSpec("file", "x", "s", 0)
        self.stats = SourceStats(frames=len(windows), windows=len(windows), status="ended")
        self.queue = DropOldestQueue(len(windows) + 1, threading.Event())
        for w in windows:
            self.queue.put(w)
        self.queue.put(EndOfStream("s", 0, "eof"), droppable=False)

    def start(self) -> None: ...
    def stop(self) -> None: ...
    def join(self, timeout: float | None = None) -> None: ...
    def is_alive(self) -> bool:
        return False


class _Recorder:
    def __init__(self) -> None:
        self.results: list[tuple[Window, object]] = []

    def write(self, window, prediction, latency_ms) -> None:
        self.results.append((window, prediction))

    def close(self) -> None: ...


@pytest.mark.parametrize("max_batch", [1, 3])
def test_cached_stream_windows_equal_uncached(predictor, max_batch):
    hop = 2
    windows = _windows(_frames(7, 30), hop, reset_at=13)
    assert {w.generation for w in windows} == {0, 1}  # a reconnect in the middle
    kept = [w for k, w in enumerate(windows) if k not in (2, 3, 9)]  # windows the queue dropped
    sink = _Recorder()
    summary = Scheduler(predictor, [_QueuedReader(kept)], [sink], max_batch=max_batch).run()
    assert [w.seq for w, _ in sink.results] == [w.seq for w in kept]
    for window, pred in sink.results:
        ref = predictor.predict_batch([window.frames])[0]  # no cache: all T frames computed
        np.testing.assert_array_equal(pred.frame_probs, ref.frame_probs)
        np.testing.assert_array_equal(pred.stage_probs, ref.stage_probs)
        np.testing.assert_array_equal(pred.scores, ref.scores)
        assert pred.stage_mask == ref.stage_mask and list(pred.frame_mask) == list(ref.frame_mask)
    # each frame's features computed once: the union of the kept windows' frames
    frames_seen = len({i for w in kept for i in w.frame_ids})
    assert summary.policy_frames == {"computed": frames_seen, "reused": NUM_FRAMES * len(kept) - frames_seen}


def test_cache_reuse_and_eviction(predictor):
    cache = FeatureCache()
    windows = _windows(_frames(3, 12), hop=1, reset_at=-1)
    for w in windows:
        cache.sync(w.generation)
        cache.forget_before(w.frame_ids[0])
        predictor.predict_batch([w.frames], [StreamFrames(cache, w.frame_ids)])
        assert len(cache) == NUM_FRAMES  # only the frames a later window can still hold
    assert (cache.computed, cache.reused) == (NUM_FRAMES + len(windows) - 1, (NUM_FRAMES - 1) * (len(windows) - 1))
    cache.sync(cache.generation + 1)
    assert len(cache) == 0
    with pytest.raises(ValueError, match="frame ids"):
        predictor.predict_batch([windows[0].frames], [StreamFrames(cache, (1, 2))])


def test_cached_features_are_read_only_rows_of_the_call_output(predictor):
    """The cache keeps rows of the features call's own output without copying them: they must not
    be writable, or a caller could change what later windows reuse."""
    cache = FeatureCache()
    (w,) = _windows(_frames(5, NUM_FRAMES), hop=1, reset_at=-1)
    predictor.predict_batch([w.frames], [StreamFrames(cache, w.frame_ids)])
    row = cache.get(w.frame_ids[0])
    assert row is not None and not row.flags.writeable
    with pytest.raises(ValueError):
        row[0] = 0.0


def test_run_streams_computes_hop_frames_per_window(split_bundle, tmp_path, capsys):
    clip = make_clip(tmp_path / "c.mp4", num_frames=40, size=32)  # stride 2 -> 20 sampled frames
    summary = run_streams(split_bundle, [str(clip)], RunOptions(hop=2, max_batch=2, queue_size=50, threads=1,
                                                                jsonl=tmp_path / "r.jsonl"))
    windows = summary.windows
    assert windows == 1 + (20 - NUM_FRAMES) // 2
    assert summary.policy_frames == {"computed": NUM_FRAMES + 2 * (windows - 1),
                                     "reused": (NUM_FRAMES - 2) * (windows - 1)}
    assert "selection-network frames: " in capsys.readouterr().out
    assert summary.to_json()["policy_frames"]["computed"] == 20
