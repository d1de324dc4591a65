"""The adaptive predictor: selection net -> greedy actions -> the backbone for the chosen stages.

One clip ``(T, H, W, 3) uint8 RGB`` is centre-cropped once; the selection net sees all T crops at
``policy_size``; only the kept frames' crops are normalised for the backbone. The backbone is one
model for every stage configuration (a configuration is its ``stage_mask`` feed); it is loaded, and
every configuration warmed at every T', when the predictor starts, so no call ever loads one.

    with AdaptivePredictor("out/bundle") as predictor:
        pred = predictor.predict(frames)
        print(pred.topk(3), pred.stage_mask, pred.num_frames_kept, pred.gflops)
"""
from __future__ import annotations

import time
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any, Sequence

import numpy as np

from .. import preprocess
from ..frame_cap import apply_frame_cap, max_frames_table
from ..bundle import (BACKBONE_INPUT, BACKBONE_MASK_INPUT, BACKBONE_NAME, BACKBONE_OUTPUT, POLICY_FEATURES,
                      POLICY_FEATURES_NAME, POLICY_INPUT, POLICY_NAME, Bundle, open_bundle)
from ..masks import mask_to_str
from .backends import make_backend
from .backends.base import Backend
from .feature_cache import StreamFrames
from .loading import bundle_model_names, load_bundle_model, load_policy_split
from .split_heads import SplitHeads


def stage_mask_feed(mask: str) -> np.ndarray:
    """The backbone's ``stage_mask`` input for a bit string: ``'10'`` -> ``array([1, 0])`` (int64)."""
    return np.asarray([int(c) for c in mask], np.int64)


def greedy_actions(frame_probs: np.ndarray, stage_probs: np.ndarray,
                   threshold: float = 0.5) -> tuple[np.ndarray, np.ndarray]:
    """Greedy rule of docs/INTERFACES.md: keep what is ``> threshold``; at least one frame (argmax).

    Args:
        frame_probs: ``(B, T)`` (or ``(T,)``) sigmoids of the frame head.
        stage_probs: ``(B, K)`` (or ``(K,)``) sigmoids of the stage head.

    Returns:
        ``(u, v)``: ``(B, T)`` and ``(B, K)`` bool arrays (``v`` True = stage stays 3D).
    """
    fp = np.asarray(frame_probs, dtype=np.float64)
    sp = np.asarray(stage_probs, dtype=np.float64)
    if fp.ndim == 1:
        fp = fp[None]
    if sp.ndim == 1:
        sp = sp[None]
    u = fp > threshold
    empty = ~u.any(axis=1)
    if empty.any():
        u[empty, fp[empty].argmax(axis=1)] = True
    return u, sp > threshold


def _stack(arrays: Sequence[np.ndarray]) -> np.ndarray:
    """A batch of one is a view (no copy); more are stacked."""
    return arrays[0][None] if len(arrays) == 1 else np.stack(arrays)


def logits_to_scores(logits: np.ndarray, multi_label: bool = False) -> np.ndarray:
    """Softmax over the last axis, or element-wise sigmoid when ``multi_label``."""
    x = np.asarray(logits, dtype=np.float64)
    if multi_label:
        return (1.0 / (1.0 + np.exp(-x))).astype(np.float32)
    x = x - x.max(axis=-1, keepdims=True)
    e = np.exp(x)
    return (e / e.sum(axis=-1, keepdims=True)).astype(np.float32)


@dataclass
class Prediction:
    """The result for one clip.

    ``timings_ms`` (policy, preprocess, backbone, total) are those of the call that produced it:
    in a batch, ``policy`` and ``total`` are the batch's, ``backbone`` is its group's engine call.
    """

    scores: np.ndarray  # (C,)
    classes: Sequence[str]
    frame_mask: np.ndarray  # (T,) bool
    stage_mask: str
    gflops: float  # backbone + selection net
    gflops_backbone: float
    gflops_policy: float
    timings_ms: dict[str, float] = field(default_factory=dict)
    frame_probs: np.ndarray | None = None  # (T,), None when the actions were given
    stage_probs: np.ndarray | None = None  # (K,)

    @property
    def num_frames_kept(self) -> int:
        """T', the number of frames the backbone ran on."""
        return int(np.count_nonzero(self.frame_mask))

    @property
    def num_3d_stages(self) -> int:
        """Number of stages kept 3D."""
        return self.stage_mask.count("1")

    def topk(self, k: int = 5) -> list[tuple[str, float]]:
        """The ``k`` best ``(label, score)`` pairs, best first."""
        order = np.argsort(-self.scores, kind="stable")[: max(int(k), 0)]
        return [(self.classes[i], float(self.scores[i])) for i in order]

    @property
    def label(self) -> str:
        """Top-1 class name."""
        return self.topk(1)[0][0]

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready summary (top-5, actions, cost, timings)."""
        return {"top": self.topk(5), "stage_mask": self.stage_mask,
                "frame_mask": [bool(b) for b in self.frame_mask], "num_frames_kept": self.num_frames_kept,
                "gflops": round(self.gflops, 4), "timings_ms": {k: round(v, 3) for k, v in self.timings_ms.items()}}


class AdaptivePredictor:
    """Runs an Ada3D bundle on clips with one backend.

    Args:
        bundle: a ``Bundle`` or a bundle directory (opened and verified).
        backend: a kind of the backend table ("ort", "trt") or a ``Backend`` instance (not closed by
            ``close``; e.g. ``ada3d_edge.torch_backend.TorchBackend`` over PyTorch modules).
        device: passed to ``make_backend`` (None = the backend's default).
        threshold: greedy threshold; None = the manifest's ``threshold``.
        warmup: run every engine once at every T' in 1..T (batch 1) at start-up.
        max_batch: split batches larger than this; TensorRT plans default to their ``max_batch``.
        split_policy: run the bundle's split selection network (per-frame features, then heads;
            needed to reuse features on streams). None: whenever the bundle has one and the backend
            loads ONNX files; False: the whole ``policy``.
        cap: keep at most the frames that hold each clip's GFLOPs, selection network included,
            within ``cap`` x Upper's (``frame_cap``); None: the greedy actions as they are.
        cap_lut: a latency table (``ada3d bench --lut``; path or ``LatencyLut``) measured on this
            machine: the cap then bounds measured latency (the table's costs and selection cost)
            instead of GFLOPs.
        backend_options: passed to ``make_backend`` (e.g. ``intra_op_threads`` for "ort").
    """

    def __init__(self, bundle: Bundle | str, backend: str | Backend = "ort", device: str | None = None,
                 threshold: float | None = None, warmup: bool = True, max_batch: int | None = None,
                 split_policy: bool | None = None, cap: float | None = None, cap_lut: Any = None,
                 **backend_options: Any) -> None:
        self.bundle = bundle if isinstance(bundle, Bundle) else open_bundle(bundle)
        self.manifest = m = self.bundle.manifest
        self.threshold = m.threshold if threshold is None else float(threshold)
        if not 0.0 <= self.threshold <= 1.0:
            raise ValueError(f"threshold must be in [0, 1], got {threshold}")
        self.cap = None if cap is None else float(cap)
        self.cap_basis = None if cap is None else ("GFLOPs" if cap_lut is None else "measured latency")
        self.max_frames = None if cap is None else self._cap_table(self.cap, cap_lut)
        if max_batch is not None and int(max_batch) < 1:
            raise ValueError(f"max_batch must be >= 1, got {max_batch}")
        self._owns_backend = not isinstance(backend, Backend)
        self.backend = make_backend(backend, device=device, **backend_options) if self._owns_backend else backend
        self.max_batch = max_batch
        self._split_wanted = split_policy
        self.split_policy = False
        try:
            self._load_all()
            if warmup:
                self.warmup()
        except BaseException:
            self.close()
            raise

    def _cap_table(self, cap: float, cap_lut: Any) -> dict[str, int]:
        """``frame_cap.max_frames_table`` on the manifest's GFLOPs, or on a latency table of this bundle."""
        m, b = self.manifest, self.bundle
        if cap_lut is None:
            return max_frames_table(b.masks, m.num_frames, b.gflops, b.policy_gflops(),
                                    b.gflops(b.upper_mask, m.num_frames), cap)
        from ..latency_lut import LatencyLut, check_lut, load_checked_lut

        where = "--cap-lut"
        if isinstance(cap_lut, LatencyLut):
            lut = cap_lut
            check_lut(lut, m.arch, m.num_frames, m.num_stages, m.crop_size, where=where, against="bundle")
        else:
            lut = load_checked_lut(cap_lut, m.arch, m.num_frames, m.num_stages, m.crop_size, where=where,
                                   against="bundle")
        if lut.selection_cost is None:
            raise ValueError(f"{where}: the latency table has no selection_cost (written before it); write it "
                             "again with `ada3d bench BUNDLE --lut FILE`")
        return max_frames_table(b.masks, m.num_frames, lambda mask, t: lut.cost[(mask, t)], lut.selection_cost,
                                1.0, cap)

    # -- start-up -------------------------------------------------------------------------------
    def _load_all(self) -> None:
        """Load the policy and the backbone (every configuration) once."""
        entries = [load_bundle_model(self.backend, self.bundle, name) for name in bundle_model_names(self.bundle)]
        if self.backend.file_kind == "plan":
            limit = min(int(getattr(e, "max_batch", 1)) for e in entries)
            self.max_batch = limit if self.max_batch is None else min(self.max_batch, limit)
        if self._split_wanted is not False:
            self.split_policy = load_policy_split(self.backend, self.bundle)
            if self.split_policy:
                self._heads = SplitHeads(self.manifest.policy_split, self.manifest.num_frames)
            if self._split_wanted and not self.split_policy:
                raise ValueError(f"{self.bundle.root}: split_policy=True, but "
                                 + ("the bundle has no policy_split (re-export it with `ada3d export`)"
                                    if self.manifest.policy_split is None else
                                    f"the {self.backend.kind} backend runs only the whole policy"))

    @property
    def caches_features(self) -> bool:
        """Whether ``predict_batch`` reuses frame features given ``streams`` (the split policy)."""
        return self.split_policy

    def warmup(self) -> None:
        """Run the policy, and the backbone in every configuration at every T' in 1..T, once (batch 1)."""
        m = self.manifest
        p, s = m.policy_size, m.crop_size
        self.backend.run(POLICY_NAME, {POLICY_INPUT: np.zeros((1, 3, m.num_frames, p, p), np.float32)})
        if self.split_policy:
            for n in sorted({1, m.num_frames}):
                self.backend.run(POLICY_FEATURES_NAME, {POLICY_INPUT: np.zeros((n, 3, p, p), np.float32)})
            self._heads(self.backend, np.zeros((1, self.manifest.policy_split.num_features), np.float32))
        for mask in self.bundle.masks:
            for t in range(1, m.num_frames + 1):
                self.backend.run(BACKBONE_NAME, {BACKBONE_INPUT: np.zeros((1, 3, t, s, s), np.float32),
                                                 BACKBONE_MASK_INPUT: stage_mask_feed(mask)})

    # -- pieces ---------------------------------------------------------------------------------
    def _check_frames(self, frames: np.ndarray) -> np.ndarray:
        frames = np.asarray(frames)
        t = self.manifest.num_frames
        if frames.ndim != 4 or frames.shape[0] != t or frames.shape[-1] != 3:
            raise ValueError(f"a clip must be (T={t}, H, W, 3) uint8 RGB frames sampled every "
                             f"{self.manifest.stride} frames, got shape {frames.shape}")
        return frames

    def _crop(self, frames: np.ndarray) -> np.ndarray:
        m = self.manifest
        return preprocess.center_crop_frames(frames, m.crop_size, m.short_side)

    def _batches(self, n: int) -> list[slice]:
        step = n if self.max_batch is None else self.max_batch
        return [slice(i, min(i + step, n)) for i in range(0, n, max(step, 1))]

    def _select_crops(self, crops: Sequence[np.ndarray], streams: Sequence[StreamFrames | None] | None = None
                      ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, dict[str, float]]:
        """Policy on all T crops of each clip -> (u (B,T), v (B,K), frame_probs, stage_probs, ms)."""
        if self.split_policy:
            fp, sp, ms = self._split_policy_probs(crops, streams)
        else:
            m = self.manifest
            t0 = time.perf_counter()
            x = _stack([preprocess.to_policy_tensor(c, m.policy_size, m.mean, m.std) for c in crops])
            t1 = time.perf_counter()
            outs = [self.backend.run(POLICY_NAME, {POLICY_INPUT: x[sl]}) for sl in self._batches(len(x))]
            fp = np.concatenate([o["frame_probs"] for o in outs])
            sp = np.concatenate([o["stage_probs"] for o in outs])
            ms = {"preprocess": (t1 - t0) * 1e3, "policy": (time.perf_counter() - t1) * 1e3}
        u, v = greedy_actions(fp, sp, self.threshold)
        if self.max_frames is not None:
            u = apply_frame_cap(u, fp, [mask_to_str(row) for row in v], self.max_frames)
        return u, v, fp, sp, ms

    def _split_policy_probs(self, crops: Sequence[np.ndarray], streams: Sequence[StreamFrames | None] | None
                            ) -> tuple[np.ndarray, np.ndarray, dict[str, float]]:
        """Split policy: features of the frames no stream cache holds (each once), mean, heads.

        Each clip's T rows of frame terms are gathered as arrays (cached ones, or rows of this call's
        own output block, which the cache then keeps without a copy) and stacked once: on a demo-size
        window the per-frame copies and assignments cost as much as several frames of the network.
        """
        m = self.manifest
        t = m.num_frames
        rows: list[list[np.ndarray | None]] = []  # per clip, its T rows of terms (None: to compute)
        todo: dict[int, list[int]] = {}  # clip -> frames to compute
        shared: list[tuple[int, int, int, int]] = []  # (clip, frame) that reuse (clip, frame) of this batch
        first: dict[tuple[int, int], tuple[int, int]] = {}
        for i in range(len(crops)):
            stream = streams[i] if streams else None
            if stream is None:
                rows.append([None] * t)
                todo[i] = list(range(t))
                continue
            if len(stream.ids) != t:
                raise ValueError(f"streams[{i}] has {len(stream.ids)} frame ids for a clip of T={t} frames")
            cache = stream.cache
            clip_rows = [cache.get(frame_id) for frame_id in stream.ids]
            rows.append(clip_rows)
            missing = [j for j, row in enumerate(clip_rows) if row is None]
            cache.reused += t - len(missing)
            for j in missing:
                key = (id(cache), stream.ids[j])
                if key in first:
                    shared.append((i, j, *first[key]))
                    cache.reused += 1
                else:
                    first[key] = (i, j)
                    cache.computed += 1
                    todo.setdefault(i, []).append(j)
        t0 = time.perf_counter()
        x = None
        if todo:
            parts = [preprocess.to_policy_frames(crops[i] if len(js) == t else crops[i][js], m.policy_size,
                                                 m.mean, m.std) for i, js in todo.items()]
            x = parts[0] if len(parts) == 1 else np.concatenate(parts)
        t1 = time.perf_counter()
        if x is not None:
            step = len(x) if self.max_batch is None else self.max_batch * t
            outs = [self.backend.run(POLICY_FEATURES_NAME, {POLICY_INPUT: x[k:k + step]})[POLICY_FEATURES]
                    for k in range(0, len(x), step)]
            out = np.concatenate(outs) if len(outs) > 1 else np.array(outs[0])  # our own block
            out.setflags(write=False)  # its rows live on in the stream caches
            k = 0
            for i, js in todo.items():
                stream = streams[i] if streams else None
                for j in js:
                    rows[i][j] = out[k]
                    if stream is not None:
                        stream.cache.put(stream.ids[j], out[k])
                    k += 1
        for i, j, i0, j0 in shared:
            rows[i][j] = rows[i0][j0]
        terms = np.array(rows, dtype=np.float32)  # (B, T, T+K)
        clip_feats = np.add.reduce(terms, axis=1) / np.float32(t)  # the mean; np.mean's wrapper costs more here
        if self._heads.in_numpy:
            fp, sp = self._heads(self.backend, clip_feats)
        else:
            outs = [self._heads(self.backend, clip_feats[sl]) for sl in self._batches(len(clip_feats))]
            fp = np.concatenate([o[0] for o in outs])
            sp = np.concatenate([o[1] for o in outs])
        return fp, sp, {"preprocess": (t1 - t0) * 1e3, "policy": (time.perf_counter() - t1) * 1e3}

    def _classify_crops(self, kept: Sequence[np.ndarray], mask: str) -> tuple[np.ndarray, dict[str, float]]:
        """Backbone ``mask`` on clips of kept crops that share one T' -> (scores (B,C), ms)."""
        m = self.manifest
        if len({len(c) for c in kept}) != 1:
            raise ValueError(f"clips batched together must keep the same number of frames, got {[len(c) for c in kept]}")
        t0 = time.perf_counter()
        x = _stack([preprocess.to_clip_tensor(c, m.mean, m.std) for c in kept])
        t1 = time.perf_counter()
        feed = stage_mask_feed(mask)
        logits = np.concatenate([self.backend.run(BACKBONE_NAME, {BACKBONE_INPUT: x[sl],
                                                                  BACKBONE_MASK_INPUT: feed})[BACKBONE_OUTPUT]
                                 for sl in self._batches(len(x))])
        t2 = time.perf_counter()
        return logits_to_scores(logits, m.multi_label), {"preprocess": (t1 - t0) * 1e3, "backbone": (t2 - t1) * 1e3}

    def _mask_string(self, stage_mask: str | Sequence[bool]) -> str:
        mask = stage_mask if isinstance(stage_mask, str) else self.bundle.mask_from_bools(list(stage_mask))
        if mask not in self.bundle.masks:
            raise ValueError(f"stage mask {stage_mask!r} unknown; valid masks: {self.bundle.masks}")
        return mask

    def _frame_mask(self, frame_mask: Sequence[bool]) -> np.ndarray:
        u = np.asarray(frame_mask, dtype=bool).reshape(-1)
        if u.shape != (self.manifest.num_frames,) or not u.any():
            raise ValueError(f"frame_mask must be {self.manifest.num_frames} booleans with at least one True, "
                             f"got {list(np.asarray(frame_mask).reshape(-1))}")
        return u

    # -- public ---------------------------------------------------------------------------------
    def select(self, frames_list: Sequence[np.ndarray]) -> tuple[np.ndarray, list[str], dict[str, float]]:
        """Selection net on B clips -> (frame_masks (B, T) bool, stage masks, timings in ms)."""
        t0 = time.perf_counter()
        crops = [self._crop(self._check_frames(f)) for f in frames_list]
        t1 = time.perf_counter()
        u, v, _, _, ms = self._select_crops(crops)
        ms["preprocess"] += (t1 - t0) * 1e3
        return u, [mask_to_str(row) for row in v], ms

    def classify(self, frames_list: Sequence[np.ndarray], frame_masks: np.ndarray,
                 stage_mask: str | Sequence[bool]) -> tuple[np.ndarray, dict[str, float]]:
        """Backbone ``stage_mask`` on clips that keep the same number of frames -> (scores (B, C), ms)."""
        mask = self._mask_string(stage_mask)
        t0 = time.perf_counter()
        kept = []
        for frames, u in zip(frames_list, frame_masks):
            u = self._frame_mask(u)
            kept.append(self._crop(self._check_frames(frames)[u]))  # per-frame crop: same as crop-all
        t1 = time.perf_counter()
        scores, ms = self._classify_crops(kept, mask)
        ms["preprocess"] += (t1 - t0) * 1e3
        return scores, ms

    def predict(self, frames: np.ndarray) -> Prediction:
        """Classify one clip ``(T, H, W, 3) uint8 RGB``."""
        return self.predict_batch([frames])[0]

    def predict_batch(self, frames_list: Sequence[np.ndarray],
                      streams: Sequence[StreamFrames | None] | None = None) -> list[Prediction]:
        """Classify B clips: one batched policy call, then one backbone call per (stage mask, T').

        ``streams`` (one per clip, or None): where each clip's frames come from, so the split policy
        computes the features of frames its stream's cache does not hold and reuses the others
        (``caches_features``; ignored otherwise). The results are those of uncached calls.
        """
        if len(frames_list) == 0:
            return []
        if streams is not None and len(streams) != len(frames_list):
            raise ValueError(f"streams: one per clip or None, got {len(streams)} for {len(frames_list)} clips")
        t0 = time.perf_counter()
        crops = [self._crop(self._check_frames(f)) for f in frames_list]
        t_crop = (time.perf_counter() - t0) * 1e3
        u, v, fp, sp, sel_ms = self._select_crops(crops, streams)
        masks = [mask_to_str(row) for row in v]
        groups: dict[tuple[str, int], list[int]] = defaultdict(list)
        for i, mask in enumerate(masks):
            groups[(mask, int(u[i].sum()))].append(i)
        scores: list[np.ndarray | None] = [None] * len(crops)
        backbone_ms: list[float] = [0.0] * len(crops)
        pre_ms = t_crop + sel_ms["preprocess"]
        for (mask, _), idx in groups.items():
            group_scores, ms = self._classify_crops([crops[i][u[i]] for i in idx], mask)
            pre_ms += ms["preprocess"]
            for j, i in enumerate(idx):
                scores[i], backbone_ms[i] = group_scores[j], ms["backbone"]
        total = (time.perf_counter() - t0) * 1e3
        policy_gflops = self.bundle.policy_gflops()
        out = []
        for i in range(len(crops)):
            gb = self.bundle.gflops(masks[i], int(u[i].sum()))
            out.append(Prediction(
                scores=scores[i], classes=self.manifest.classes, frame_mask=u[i].copy(), stage_mask=masks[i],
                gflops=gb + policy_gflops, gflops_backbone=gb, gflops_policy=policy_gflops,
                timings_ms={"policy": sel_ms["policy"], "preprocess": pre_ms, "backbone": backbone_ms[i],
                            "total": total},
                frame_probs=fp[i], stage_probs=sp[i]))
        return out

    def run_fixed(self, frames: np.ndarray, frame_mask: Sequence[bool],
                  stage_mask: str | Sequence[bool]) -> Prediction:
        """Classify one clip with given actions (no selection net): for parity with PyTorch."""
        t0 = time.perf_counter()
        u = self._frame_mask(frame_mask)
        mask = self._mask_string(stage_mask)
        scores, ms = self.classify([frames], u[None], mask)
        gb = self.bundle.gflops(mask, int(u.sum()))
        return Prediction(scores=scores[0], classes=self.manifest.classes, frame_mask=u, stage_mask=mask,
                          gflops=gb, gflops_backbone=gb, gflops_policy=0.0,
                          timings_ms={"policy": 0.0, "preprocess": ms["preprocess"], "backbone": ms["backbone"],
                                      "total": (time.perf_counter() - t0) * 1e3})

    def describe(self) -> str:
        """One line: bundle, arch, backend."""
        m = self.manifest
        return (f"{self.bundle.root} ({m.arch}, K={m.num_stages}, T={m.num_frames}, {len(m.classes)} classes) "
                f"on {self.backend.describe()}, threshold {self.threshold}"
                + (f", frame cap {self.cap:g}x Upper's {self.cap_basis}" if self.cap is not None else ""))

    def close(self) -> None:
        """Close the backend if this predictor created it."""
        if self._owns_backend and getattr(self, "backend", None) is not None:
            self.backend.close()

    def __enter__(self) -> "AdaptivePredictor":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
