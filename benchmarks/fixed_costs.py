"""Fixed costs of the demo pipeline (issue 14 item 2): what one clip costs besides the backbone.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/fixed_costs.py [--bundle runs/demo/bundle] [--rounds 80]

Writes benchmarks/results/fixed_costs_cpu.{md,json}. Every comparison runs round-robin in this one
process (each round runs every variant once, in a shuffled order), ONNX Runtime CPU with 1 intra-op
thread; medians after warm-up rounds; ratios are what to quote on a shared machine.

1. Per step of ``AdaptivePredictor.predict`` on demo clips (8 frames of 64x64, the demo videos'
   size), the backbone fixed to Upper (mask 11 on all 8 frames) so both paths run the same backbone:
   the old path (the code before this change: float32 formula normalisation, whole ``policy.onnx``,
   the ORT wrapper reading output names on every call) against the new one (table-lookup
   normalisation (cv2.LUT), the split selection network with numpy heads where the manifest records
   their bias, frame-major policy input, names read at load).
2. Streams: the selection network per window with hop T/2, features cached per source vs not, on one
   stream and on 4 whose windows are batched in one call (the scheduler's default `--max-batch`).
3. Per-call overhead: ``InferenceSession.run`` vs IOBinding (ORT-allocated and pre-bound outputs).
4. Normalisation inside the policy graph (uint8 NHWC input) vs the table lookup (cv2.LUT) + float32 graph.
5. Smaller selection networks (random weights: latency only) relative to the demo backbone's Upper.

Without ``--bundle`` (or when it does not exist) a demo-size bundle with random weights is built from
train/demo.yaml in a temporary directory: the timings do not depend on the weights.
"""
from __future__ import annotations

import argparse
import json
import random
import tempfile
import time
from pathlib import Path
from typing import Callable, Dict, List

import numpy as np
from _common import RESULTS, command_line, machine_lines

from ada3d_edge import preprocess
from ada3d_edge.bundle import POLICY_FEATURES, POLICY_FEATURES_NAME, open_bundle
from ada3d_edge.runtime.bench_report import machine_info
from ada3d_edge.runtime.feature_cache import FeatureCache, StreamFrames
from ada3d_edge.runtime.predictor import AdaptivePredictor, logits_to_scores, stage_mask_feed
from ada3d_edge.runtime.sources import ClipBuffer

DEMO_BUNDLE = Path("runs/demo/bundle")
BATCHED_STREAMS = 4  # the scheduler's default batch: windows of 4 sources in one call


# --- the old path (the code this change replaced), kept here to measure against -------------------

def old_to_clip_tensor(crops: np.ndarray, mean, std) -> np.ndarray:
    m, s = np.asarray(mean, np.float32), np.asarray(std, np.float32)
    x = crops.astype(np.float32) * np.float32(1.0 / 255.0)
    x = (x - m) / s
    return np.ascontiguousarray(x.transpose(3, 0, 1, 2))


def old_to_policy_tensor(crops: np.ndarray, p: int, mean, std) -> np.ndarray:
    import cv2

    t, h, w, _ = crops.shape
    small = crops if (h, w) == (p, p) else np.stack([cv2.resize(c, (p, p), interpolation=cv2.INTER_AREA)
                                                     for c in crops])
    return old_to_clip_tensor(small, mean, std)


def take_to_clip_tensor(crops: np.ndarray, mean, std) -> np.ndarray:
    """The normalisation of the release before: the same table, read by ``np.take`` per channel."""
    table = preprocess._normalise_table(tuple(map(float, mean)), tuple(map(float, std)))
    t, h, w, _ = crops.shape
    out = np.empty((3, t, h, w), dtype=np.float32)
    for c in range(3):
        np.take(table[c], crops[..., c], out=out[c], mode="clip")
    return out


def old_run(session, inputs: Dict[str, np.ndarray]) -> Dict[str, np.ndarray]:
    """The ORT backend's run before: names read from the session on every call."""
    expected = [i.name for i in session.get_inputs()]
    if set(inputs) != set(expected):
        raise ValueError("bad inputs")
    feeds = {k: np.ascontiguousarray(v, dtype=np.float32 if v.dtype.kind == "f" else v.dtype)  # stage_mask: int64
             for k, v in inputs.items()}
    outputs = session.run(None, feeds)
    return {o.name: arr for o, arr in zip(session.get_outputs(), outputs)}


# --- measuring -------------------------------------------------------------------------------------

def round_robin(variants: Dict[str, Callable[[int], Dict[str, float]]], rounds: int, warmup: int,
                seed: int = 0) -> Dict[str, Dict[str, float]]:
    """Run every variant once per round in a shuffled order; per variant, the median of each timed
    step (ms) over the rounds after ``warmup``."""
    order = list(variants)
    rng = random.Random(seed)
    samples: Dict[str, Dict[str, List[float]]] = {k: {} for k in order}
    for r in range(warmup + rounds):
        rng.shuffle(order)
        for name in order:
            steps = variants[name](r)
            if r >= warmup:
                for step, ms in steps.items():
                    samples[name].setdefault(step, []).append(ms)
    return {k: {s: float(np.median(v)) for s, v in steps.items()} for k, steps in samples.items()}


class Timer:
    def __init__(self) -> None:
        self.ms: Dict[str, float] = {}
        self._t = time.perf_counter()

    def lap(self, step: str) -> None:
        now = time.perf_counter()
        self.ms[step] = self.ms.get(step, 0.0) + (now - self._t) * 1e3
        self._t = now

    def done(self) -> Dict[str, float]:
        self.ms["total"] = sum(self.ms.values())
        return self.ms


def demo_bundle(path: str | None, tmp: Path) -> tuple[Path, str]:
    if path and Path(path).is_dir():
        layout = open_bundle(path).manifest.backbone.ort_layout
        return Path(path), f"`{path}` (ONNX Runtime layout `{layout}`)"
    import torch

    from ada3d_edge.export.exporter import export_bundle
    from ada3d_edge.models import build_ada3d
    from ada3d_edge.train.build import data_info, model_config
    from ada3d_edge.train.checkpoint import save_checkpoint
    from ada3d_edge.train.config import load_recipe

    recipe = load_recipe(Path(__file__).resolve().parents[1] / "train" / "demo.yaml", check_required=False)
    classes = [f"class_{i}" for i in range(8)]
    cfg = model_config(recipe, len(classes))
    torch.manual_seed(0)
    model = build_ada3d(cfg).eval()
    ckpt = save_checkpoint(tmp / "demo_random.pt", {
        "model_config": cfg.to_dict(), "data": data_info(recipe, classes, False), "stage": "joint", "epoch": 0,
        "step": 0, "model": model.state_dict(), "optimizer": None, "scheduler": None, "metrics": {}, "rng": None})
    return export_bundle(ckpt, tmp / "bundle", progress=False), \
        (f"a demo-size bundle with random weights built from train/demo.yaml ({path} absent; latency "
         "does not depend on the weights, but the policy's own actions in `predict()` do)")


# --- 1. per step -----------------------------------------------------------------------------------

def per_step(bundle: Path, clips: List[np.ndarray], rounds: int, warmup: int) -> Dict[str, Dict[str, float]]:
    pred = AdaptivePredictor(bundle, intra_op_threads=1)
    m = pred.manifest
    sessions = pred.backend._sessions  # the same sessions for both paths
    t = m.num_frames
    upper = np.ones(t, bool)
    upper_mask = stage_mask_feed(pred.bundle.upper_mask)  # format 2: one backbone graph, the configuration is a feed
    old_backbone, old_feeds = sessions["backbone"], {"stage_mask": upper_mask}
    if hasattr(old_backbone, "sessions"):  # `--ort-layout configs`: Upper's own flat graph, no stage_mask input
        old_backbone, takes_mask = old_backbone.sessions[pred.bundle.upper_mask]
        old_feeds = old_feeds if takes_mask else {}

    def old(r: int) -> Dict[str, float]:
        frames = clips[r % len(clips)]
        tm = Timer()
        crops = preprocess.center_crop_frames(frames, m.crop_size, m.short_side)
        tm.lap("crop")
        x = np.stack([old_to_policy_tensor(crops, m.policy_size, m.mean, m.std)])
        tm.lap("policy input")
        old_run(sessions["policy"], {"frames": x})
        tm.lap("selection net")
        xc = np.stack([old_to_clip_tensor(crops[upper], m.mean, m.std)])
        tm.lap("backbone input")
        logits = old_run(old_backbone, {"clip": xc, **old_feeds})["logits"]
        tm.lap("backbone")
        logits_to_scores(logits)
        tm.lap("scores")
        return tm.done()

    def new(r: int) -> Dict[str, float]:
        frames = clips[r % len(clips)]
        tm = Timer()
        crops = preprocess.center_crop_frames(frames, m.crop_size, m.short_side)
        tm.lap("crop")
        x = preprocess.to_policy_frames(crops, m.policy_size, m.mean, m.std)
        tm.lap("policy input")
        feats = pred.backend.run(POLICY_FEATURES_NAME, {"frames": x})[POLICY_FEATURES]
        pred._heads(pred.backend, feats.mean(axis=0, dtype=np.float32)[None])  # numpy where the manifest allows
        tm.lap("selection net")
        xc = preprocess.to_clip_tensor(crops[upper], m.mean, m.std)[None]
        tm.lap("backbone input")
        logits = pred.backend.run("backbone", {"clip": xc, "stage_mask": upper_mask})["logits"]
        tm.lap("backbone")
        logits_to_scores(logits)
        tm.lap("scores")
        return tm.done()

    def new_whole_policy(r: int) -> Dict[str, float]:
        frames = clips[r % len(clips)]
        tm = Timer()
        crops = preprocess.center_crop_frames(frames, m.crop_size, m.short_side)
        tm.lap("crop")
        x = preprocess.to_policy_tensor(crops, m.policy_size, m.mean, m.std)[None]
        tm.lap("policy input")
        pred.backend.run("policy", {"frames": x})
        tm.lap("selection net")
        xc = preprocess.to_clip_tensor(crops[upper], m.mean, m.std)[None]
        tm.lap("backbone input")
        logits = pred.backend.run("backbone", {"clip": xc, "stage_mask": upper_mask})["logits"]
        tm.lap("backbone")
        logits_to_scores(logits)
        tm.lap("scores")
        return tm.done()

    def predict_call(r: int) -> Dict[str, float]:  # the predictor end to end, actions its own
        t0 = time.perf_counter()
        pred.predict(clips[r % len(clips)])
        return {"total": (time.perf_counter() - t0) * 1e3}

    out = round_robin({"old": old, "new": new, "new, whole policy.onnx": new_whole_policy,
                       "predict() (own actions)": predict_call}, rounds, warmup)
    pred.close()
    return out


def normalisation(bundle: Path, clips: List[np.ndarray], rounds: int, warmup: int) -> Dict[str, Dict[str, float]]:
    """The backbone input of 8 and of 5 kept frames: formula, np.take table, cv2.LUT table (today's)."""
    m = open_bundle(bundle, verify=False).manifest
    crops = [preprocess.center_crop_frames(c, m.crop_size, m.short_side) for c in clips]
    ways = {"formula (old)": old_to_clip_tensor, "np.take table (previous)": take_to_clip_tensor,
            "cv2.split + cv2.LUT table (now)": preprocess.to_clip_tensor}
    same = all(np.array_equal(take_to_clip_tensor(c, m.mean, m.std), preprocess.to_clip_tensor(c, m.mean, m.std))
               for c in crops)

    def timed(fn, n):
        def go(r: int) -> Dict[str, float]:
            c = crops[r % len(crops)][:n]
            t0 = time.perf_counter()
            fn(c, m.mean, m.std)
            return {"ms": (time.perf_counter() - t0) * 1e3}
        return go

    out = round_robin({f"{k}, {n} frames": timed(f, n) for k, f in ways.items() for n in (8, 5)}, rounds, warmup)
    out["check"] = {"np.take == cv2.LUT, bit for bit": bool(same)}
    return out


# --- 2. streams ------------------------------------------------------------------------------------

def streams(bundle: Path, rounds: int, warmup: int, num_streams: int = 1, seed: int = 0) -> Dict[str, Dict[str, float]]:
    """Selection network per window, hop T/2, on ``num_streams`` streams whose windows are batched in one
    call (as the scheduler batches windows of different sources): cached per source vs uncached."""
    pred = AdaptivePredictor(bundle, intra_op_threads=1)
    m = pred.manifest
    hop = m.num_frames // 2
    rng = np.random.default_rng(seed)
    per_stream = []
    for _ in range(num_streams):
        buf, windows = ClipBuffer(m.num_frames, 1, hop), []
        for _ in range(m.num_frames + hop * (warmup + rounds)):
            clip = buf.push(rng.integers(0, 256, (64, 64, 3), dtype=np.uint8))
            if clip is not None:
                windows.append((clip, buf.frame_ids))
        per_stream.append(windows)
    caches = [FeatureCache() for _ in range(num_streams)]
    state = {}

    def cached(r: int) -> Dict[str, float]:
        crops, frames = [], []
        for windows, cache in zip(per_stream, caches):
            clip, ids = windows[r]
            crops.append(pred._crop(clip))
            cache.forget_before(ids[0])
            frames.append(StreamFrames(cache, ids))
        t0 = time.perf_counter()
        _, _, fp, _, _ = pred._select_crops(crops, frames)
        state["cached"] = fp
        return {"selection (policy input + net)": (time.perf_counter() - t0) * 1e3 / num_streams}

    def uncached(r: int) -> Dict[str, float]:
        crops = [pred._crop(windows[r][0]) for windows in per_stream]
        t0 = time.perf_counter()
        _, _, fp, _, _ = pred._select_crops(crops)
        state["uncached"] = fp
        return {"selection (policy input + net)": (time.perf_counter() - t0) * 1e3 / num_streams}

    # the cached variant must see every window, in order: both run window r in round r
    out: Dict[str, Dict[str, List[float]]] = {"cached": {}, "uncached": {}}
    same = True
    for r in range(warmup + rounds):
        pair = (("cached", cached), ("uncached", uncached))
        for name, f in (pair if r % 2 else pair[::-1]):  # alternate which runs first
            steps = f(r)
            if r >= warmup:
                for k, v in steps.items():
                    out[name].setdefault(k, []).append(v)
        same &= bool(np.array_equal(state["cached"], state["uncached"]))
    res = {k: {s: float(np.median(v)) for s, v in d.items()} for k, d in out.items()}
    res["check"] = {"hop": hop, "streams": num_streams, "cached == uncached probabilities in every window": same,
                    "frames computed": sum(c.computed for c in caches),
                    "frames reused": sum(c.reused for c in caches)}
    pred.close()
    return res


def streams_paper_size(tmp: Path, rounds: int, warmup: int, t: int = 8, k: int = 2) -> Dict[str, Dict[str, float]]:
    """The split graphs alone at the paper's selection net (width 1.0, 112 px, random weights): features of
    T/2 new frames + heads vs features of all T + heads, where per-call overhead no longer dominates."""
    import onnxruntime as ort

    from ada3d_edge.export.onnx_export import export_policy_split, split_width
    from ada3d_edge.models.selection import SelectionNet
    from ada3d_edge.models.specs import SelectionSpec

    net = SelectionNet(t, k, spec=SelectionSpec(width_mult=1.0, policy_size=112)).eval()
    fpath, hpath = export_policy_split(net, tmp / "paper_features.onnx", tmp / "paper_heads.onnx", 112)
    so = ort.SessionOptions()
    so.intra_op_num_threads = 1
    feats = ort.InferenceSession(str(fpath), so, providers=["CPUExecutionProvider"])
    heads = ort.InferenceSession(str(hpath), so, providers=["CPUExecutionProvider"])
    x = np.random.rand(t, 3, 112, 112).astype(np.float32)
    f = np.zeros((1, split_width(net)), np.float32)

    def run(n):
        def go(r):
            t0 = time.perf_counter()
            feats.run(None, {"frames": x[:n]})
            heads.run(None, {POLICY_FEATURES: f})
            return {"ms": (time.perf_counter() - t0) * 1e3}
        return go

    return round_robin({"uncached (8 frames)": run(t), "cached (4 new frames)": run(t // 2)}, rounds, warmup)


# --- 3. per-call overhead --------------------------------------------------------------------------

def per_call(bundle: Path, rounds: int, warmup: int) -> Dict[str, Dict[str, float]]:
    import onnxruntime as ort

    b = open_bundle(bundle, verify=False)
    m = b.manifest
    so = ort.SessionOptions()
    so.intra_op_num_threads = 1
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    variants = {}
    cases = {"policy features (8 frames)": (b.root / m.policy_split.features.file,
                                            np.random.rand(m.num_frames, 3, m.policy_size, m.policy_size)),
             "backbone 11 (T=8)": (b.backbone_path,
                                   np.random.rand(1, 3, m.num_frames, m.crop_size, m.crop_size))}
    for case, (path, x) in cases.items():
        x = np.ascontiguousarray(x, dtype=np.float32)
        sess = ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])
        feeds = _feeds(sess, x, b.upper_mask)
        onames = [o.name for o in sess.get_outputs()]
        outs = {o: np.empty(a.shape, np.float32) for o, a in zip(onames, sess.run(None, feeds))}
        binding = sess.io_binding()

        def run(r, sess=sess, feeds=feeds):
            return _timed(sess, feeds)

        def iob_alloc(r, sess=sess, feeds=feeds, onames=onames, binding=binding):
            t0 = time.perf_counter()
            for name, value in feeds.items():
                binding.bind_cpu_input(name, value)
            for o in onames:
                binding.bind_output(o, "cpu")
            sess.run_with_iobinding(binding)
            binding.copy_outputs_to_cpu()
            return {"ms": (time.perf_counter() - t0) * 1e3}

        def iob_prebound(r, sess=sess, feeds=feeds, outs=outs, binding=binding):
            t0 = time.perf_counter()
            for name, value in feeds.items():
                binding.bind_cpu_input(name, value)
            for o, a in outs.items():
                binding.bind_output(o, "cpu", 0, np.float32, a.shape, a.ctypes.data)
            sess.run_with_iobinding(binding)
            return {"ms": (time.perf_counter() - t0) * 1e3}

        variants[f"{case}: run"] = run
        variants[f"{case}: IOBinding, ORT-allocated outputs"] = iob_alloc
        variants[f"{case}: IOBinding, pre-bound outputs"] = iob_prebound
    return round_robin(variants, rounds, warmup)


# --- 4. normalisation inside the policy graph ------------------------------------------------------

def uint8_policy_graph(src: Path, dst: Path, mean, std) -> Path:
    """``policy_features.onnx`` with a uint8 (N, P, P, 3) input: Cast, /255, -mean, /std, Transpose."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    model = onnx.load(str(src))
    g = model.graph
    old_in = g.input[0]
    p = old_in.type.tensor_type.shape.dim[2].dim_value
    new_in = helper.make_tensor_value_info("frames_u8", TensorProto.UINT8, ["N", p, p, 3])
    consts = [numpy_helper.from_array(np.float32(1.0 / 255.0), "u8_scale"),
              numpy_helper.from_array(np.asarray(mean, np.float32), "u8_mean"),
              numpy_helper.from_array(np.asarray(std, np.float32), "u8_std")]
    nodes = [helper.make_node("Cast", ["frames_u8"], ["u8_f"], to=TensorProto.FLOAT),
             helper.make_node("Mul", ["u8_f", "u8_scale"], ["u8_s"]),
             helper.make_node("Sub", ["u8_s", "u8_mean"], ["u8_m"]),
             helper.make_node("Div", ["u8_m", "u8_std"], ["u8_n"]),
             helper.make_node("Transpose", ["u8_n"], [old_in.name], perm=[0, 3, 1, 2])]
    g.initializer.extend(consts)
    for n in reversed(nodes):
        g.node.insert(0, n)
    g.input.remove(old_in)
    g.input.insert(0, new_in)
    onnx.checker.check_model(model)
    onnx.save(model, str(dst))
    return dst


def graph_normalisation(bundle: Path, tmp: Path, clips: List[np.ndarray], rounds: int, warmup: int):
    import onnxruntime as ort

    b = open_bundle(bundle, verify=False)
    m = b.manifest
    src = b.root / m.policy_split.features.file
    u8 = uint8_policy_graph(src, tmp / "policy_features_u8.onnx", m.mean, m.std)
    so = ort.SessionOptions()
    so.intra_op_num_threads = 1
    float_sess = ort.InferenceSession(str(src), so, providers=["CPUExecutionProvider"])
    u8_sess = ort.InferenceSession(str(u8), so, providers=["CPUExecutionProvider"])
    smalls = [preprocess._resize_square(preprocess.center_crop_frames(c, m.crop_size, m.short_side), m.policy_size)
              for c in clips]
    diff = max(float(np.abs(float_sess.run(None, {"frames": preprocess.to_policy_frames(s, m.policy_size, m.mean,
                                                                                         m.std)})[0]
                            - u8_sess.run(None, {"frames_u8": np.ascontiguousarray(s)})[0]).max()) for s in smalls)

    def numpy_lookup(r):
        s = smalls[r % len(smalls)]
        t0 = time.perf_counter()
        float_sess.run(None, {"frames": preprocess.to_policy_frames(s, m.policy_size, m.mean, m.std)})
        return {"ms": (time.perf_counter() - t0) * 1e3}

    def in_graph(r):
        s = smalls[r % len(smalls)]
        t0 = time.perf_counter()
        u8_sess.run(None, {"frames_u8": np.ascontiguousarray(s)})
        return {"ms": (time.perf_counter() - t0) * 1e3}

    out = round_robin({"table lookup (cv2.LUT) + float32 graph": numpy_lookup, "uint8 in, normalised in the graph": in_graph},
                      rounds, warmup)
    out["check"] = {"max |features difference|": diff}
    return out


# --- 5. smaller selection networks -----------------------------------------------------------------

CANDIDATES = [(0.35, 32, False), (0.35, 48, False), (0.35, 24, False), (0.25, 32, False), (0.25, 48, False),
              (0.25, 24, False), (0.35, 32, True), (0.25, 24, True)]  # (width, px, shallow)
# shallow: one inverted residual per MobileNetV2 group (7 instead of 17): model.selection_depth: 1


def candidates(bundle: Path, tmp: Path, rounds: int, warmup: int):
    import onnxruntime as ort

    from ada3d_edge.export.onnx_export import export_policy
    from ada3d_edge.flops import backbone_macs, selection_macs
    from ada3d_edge.models.backbone import build_backbone
    from ada3d_edge.models.selection import SelectionNet
    from ada3d_edge.models.specs import SelectionSpec
    from ada3d_edge.train.build import model_config
    from ada3d_edge.train.config import load_recipe

    b = open_bundle(bundle, verify=False)
    m = b.manifest
    t, k = m.num_frames, m.num_stages
    so = ort.SessionOptions()
    so.intra_op_num_threads = 1
    recipe = load_recipe(Path(__file__).resolve().parents[1] / "train" / "demo.yaml", check_required=False)
    cfg = model_config(recipe, len(m.classes))
    overrides = dict(cfg.backbone_overrides)
    overrides.setdefault("num_frames", t)
    bspec = build_backbone(cfg.arch, num_classes=len(m.classes), **overrides).spec
    upper_gmacs = backbone_macs(bspec, b.upper_mask, t, m.crop_size) / 1e9
    backbone = ort.InferenceSession(str(b.backbone_path), so, providers=["CPUExecutionProvider"])
    xb = np.random.rand(1, 3, t, m.crop_size, m.crop_size).astype(np.float32)
    upper_feeds = _feeds(backbone, xb, b.upper_mask)
    variants = {"backbone 11 (T=8), Upper": lambda r: _timed(backbone, upper_feeds)}
    info = {}
    for width, size, shallow in CANDIDATES:
        spec = SelectionSpec(width_mult=width, policy_size=size)
        if shallow:
            spec = SelectionSpec(width_mult=width, policy_size=size,
                                 settings=tuple((e, c, 1, s) for e, c, _, s in spec.settings))
        net = SelectionNet(t, k, spec=spec).eval()
        path = export_policy(net, tmp / f"policy_w{width}_p{size}.onnx", t, size)
        sess = ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])
        x = np.random.rand(1, 3, t, size, size).astype(np.float32)
        name = f"width {width}, {size} px" + (", shallow (1 block per group)" if shallow else "")
        variants[name] = (lambda r, sess=sess, x=x: _timed(sess, {"frames": x}))
        info[name] = {"gmacs": selection_macs(spec, frames=t, size=size, num_stages=k, num_frames_out=t) / 1e9}
    res = round_robin(variants, rounds, warmup)
    up = res["backbone 11 (T=8), Upper"]["ms"]
    for name, d in info.items():
        d.update(ms=res[name]["ms"], latency_vs_upper=res[name]["ms"] / up, gmacs_vs_upper=d["gmacs"] / upper_gmacs)
    return {"upper_ms": up, "upper_gmacs": upper_gmacs, "candidates": info}


def _feeds(sess, x: np.ndarray, mask: str) -> Dict[str, np.ndarray]:
    """``x`` as the session's first input, plus the configuration feed where the graph takes one."""
    names = [i.name for i in sess.get_inputs()]
    feeds = {names[0]: x}
    if "stage_mask" in names:
        feeds["stage_mask"] = stage_mask_feed(mask)
    return feeds


def _timed(sess, feeds: Dict[str, np.ndarray]) -> Dict[str, float]:
    t0 = time.perf_counter()
    sess.run(None, feeds)
    return {"ms": (time.perf_counter() - t0) * 1e3}


# --- report ----------------------------------------------------------------------------------------

STEPS = ["crop", "policy input", "selection net", "backbone input", "backbone", "scores", "total"]


def summary_lines(r: dict) -> list[str]:
    """The findings, computed from the numbers below (ratios; < 0.97 counts as faster)."""
    ps, sh, st, pc, gn = r["per_step"], r["selection_share"], r["streams"], r["per_call"], r["graph_normalisation"]
    stream = st["cached"]["selection (policy input + net)"] / st["uncached"]["selection (policy input + net)"]
    sb = r["streams_batched"]
    batched = sb["cached"]["selection (policy input + net)"] / sb["uncached"]["selection (policy input + net)"]
    paper = r["streams_paper_size"]["cached (4 new frames)"]["ms"] / r["streams_paper_size"]["uncached (8 frames)"]["ms"]
    iob = min(pc[f"backbone 11 (T=8): IOBinding, {k}"]["ms"] for k in ("ORT-allocated outputs", "pre-bound outputs")) \
        / pc["backbone 11 (T=8): run"]["ms"]
    graph = gn["uint8 in, normalised in the graph"]["ms"] / gn["table lookup (cv2.LUT) + float32 graph"]["ms"]
    nz = r.get("normalisation")
    verdict = (lambda x: "faster: worth adopting" if x < 0.97 else "not faster: not adopted")
    return ["## Summary", "",
            f"- one clip end to end (Upper's backbone), median of per-round totals: new / old = "
            f"{ps['new']['total'] / ps['old']['total']:.2f}; "
            f"policy input {ps['new']['policy input'] / ps['old']['policy input']:.2f}, backbone input "
            f"{ps['new']['backbone input'] / ps['old']['backbone input']:.2f}",
            f"- fixed costs (everything but the backbone) / Upper: {sh['old']['fixed_share']:.3f} old, "
            f"{sh['new']['fixed_share']:.3f} new",
            f"- selection network (policy input + net) / Upper: {sh['old']['share']:.3f} old, {sh['new']['share']:.3f} "
            "new: the network itself did not change; only a smaller one (section 5) moves it",
            f"- streams, hop T/2: selection per window {stream:.3f}x the uncached one at the demo's size on one "
            f"stream, {batched:.3f}x with the windows of {r['streams_batched']['check']['streams']} streams in one "
            f"call, {paper:.3f}x for the graphs alone at the paper's size",
            *([f"- backbone input normalisation, 8 frames: cv2.LUT {nz['cv2.split + cv2.LUT table (now), 8 frames']['ms'] / nz['np.take table (previous), 8 frames']['ms']:.2f}x of np.take, "
               f"{nz['cv2.split + cv2.LUT table (now), 8 frames']['ms'] / nz['formula (old), 8 frames']['ms']:.2f}x of the formula"]
              if nz else []),
            f"- IOBinding on the backbone: {iob:.3f}x of `run` ({verdict(iob)})",
            f"- uint8 input normalised inside the policy graph: {graph:.3f}x of the table lookup ({verdict(graph)}; "
            "the manifest keeps float32 normalised inputs)"]


def report(r: dict) -> str:
    ps = r["per_step"]
    lines = ["# Fixed costs of the demo pipeline (ONNX Runtime CPU, 1 intra-op thread)", "",
             f"Command: `{r['command']}`", "", *machine_lines(r["machine"]),
             "- the 2-core CPU may be shared with other processes (load average above): absolute ms move between runs; "
             "quote the ratios (old and new run round-robin in the same process)",
             f"- bundle: {r['bundle']}; clips: {r['clips']}; {r['rounds']} rounds after {r['warmup']} warm-up, "
             "medians", "",
             *summary_lines(r), "",
             "## 1. One clip, per step (ms, medians); backbone fixed to Upper (mask 11, 8 frames)", "",
             "| step | old | new | new / old | new, whole policy.onnx |", "|---|---|---|---|---|"]
    old, new, whole = ps["old"], ps["new"], ps["new, whole policy.onnx"]
    for s in STEPS[:-1]:
        lines.append(f"| {s} | {old[s]:.3f} | {new[s]:.3f} | {new[s] / old[s]:.2f} | {whole[s]:.3f} |")
    total = {k: sum(d[s] for s in STEPS[:-1]) for k, d in (("old", old), ("new", new), ("whole", whole))}
    lines.append(f"| sum of the steps | {total['old']:.3f} | {total['new']:.3f} | {total['new'] / total['old']:.2f} "
                 f"| {total['whole']:.3f} |")
    lines.append(f"| median of the per-round totals | {old['total']:.3f} | {new['total']:.3f} | "
                 f"{new['total'] / old['total']:.2f} | {whole['total']:.3f} |")
    lines += ["", f"`predict()` end to end (the random-weight policy's own actions): {ps['predict() (own actions)']['total']:.3f} ms", ""]
    share = r["selection_share"]
    lines += ["Upper = crop + backbone input + backbone + scores (no selection network); the selection network's "
              "share = (policy input + selection net) / Upper:", "",
              "| path | Upper ms | selection ms | selection / Upper | fixed costs (all but backbone) / Upper |",
              "|---|---|---|---|---|"]
    for k, v in share.items():
        lines.append(f"| {k} | {v['upper_ms']:.3f} | {v['selection_ms']:.3f} | {v['share']:.3f} | {v['fixed_share']:.3f} |")
    nz = r.get("normalisation")
    if nz:
        lines += ["", "## 1b. Backbone input normalisation (uint8 crops -> (3, T', 64, 64) float32; ms, medians)", "",
                  "| implementation | 8 frames | 5 frames | / cv2.LUT (8 frames) |", "|---|---|---|---|"]
        now = nz["cv2.split + cv2.LUT table (now)" + ", 8 frames"]["ms"]
        for k in ("formula (old)", "np.take table (previous)", "cv2.split + cv2.LUT table (now)"):
            lines.append(f"| {k} | {nz[k + ', 8 frames']['ms']:.3f} | {nz[k + ', 5 frames']['ms']:.3f} | "
                         f"{nz[k + ', 8 frames']['ms'] / now:.2f} |")
        lines += ["", f"Check: {json.dumps(nz['check'])}"]
    st = r["streams"]
    c, u = st["cached"]["selection (policy input + net)"], st["uncached"]["selection (policy input + net)"]
    lines += ["", f"## 2. Streams, hop {st['check']['hop']} of T=8: selection network per window (ms, medians)", "",
              "| | ms | ratio |", "|---|---|---|", f"| uncached (all 8 frames) | {u:.3f} | 1.000 |",
              f"| cached per source (4 new frames) | {c:.3f} | {c / u:.3f} |", "",
              f"Check: {json.dumps(st['check'])}", ""]
    sb = r["streams_batched"]
    n = sb["check"]["streams"]
    cb, ub = sb["cached"]["selection (policy input + net)"], sb["uncached"]["selection (policy input + net)"]
    lines += [f"{n} streams, their windows batched in one call (as `ada3d run` batches sources); ms per window:", "",
              "| | ms per window | ratio |", "|---|---|---|",
              f"| uncached ({n} x 8 frames in one call) | {ub:.3f} | 1.000 |",
              f"| cached per source ({n} x 4 new frames in one call) | {cb:.3f} | {cb / ub:.3f} |", "",
              f"Check: {json.dumps(sb['check'])}", ""]
    pp = r["streams_paper_size"]
    u2, c2 = pp["uncached (8 frames)"]["ms"], pp["cached (4 new frames)"]["ms"]
    lines += ["The same split at the paper's selection net (MobileNetV2 width 1.0 @112, random weights; the two "
              "ONNX calls alone, no predictor):", "", "| | ms | ratio |", "|---|---|---|",
              f"| uncached: features of 8 frames + heads | {u2:.3f} | 1.000 |",
              f"| cached: features of 4 frames + heads | {c2:.3f} | {c2 / u2:.3f} |", "",
              "## 3. Per-call overhead (ms, medians)", "", "| call | ms | vs run |", "|---|---|---|"]
    pc = r["per_call"]
    for case in ("policy features (8 frames)", "backbone 11 (T=8)"):
        base = pc[f"{case}: run"]["ms"]
        for k, v in pc.items():
            if k.startswith(case):
                lines.append(f"| {k} | {v['ms']:.3f} | {v['ms'] / base:.3f} |")
    gn = r["graph_normalisation"]
    base = gn["table lookup (cv2.LUT) + float32 graph"]["ms"]
    lines += ["", "## 4. Policy input normalisation: table lookup vs inside the graph (8 frames, ms, medians)", "",
              "| variant | ms | ratio |", "|---|---|---|"]
    for k in ("table lookup (cv2.LUT) + float32 graph", "uint8 in, normalised in the graph"):
        lines.append(f"| {k} | {gn[k]['ms']:.3f} | {gn[k]['ms'] / base:.3f} |")
    lines += ["", f"Check: {json.dumps(gn['check'])}", ""]
    cd = r["candidates"]
    lines += ["## 5. Smaller selection networks (random weights, whole policy on 8 frames; latency only)", "",
              f"Upper (backbone 11, T=8): {cd['upper_ms']:.3f} ms, {cd['upper_gmacs']:.4f} GMACs. Paper: MobileNetV2 "
              "@112 is ~1.6% of slow_r50 @224 GFLOPs.", "",
              "| selection net | GMACs | GMACs / Upper | ms | latency / Upper |", "|---|---|---|---|---|"]
    for k, v in cd["candidates"].items():
        lines.append(f"| {k} | {v['gmacs']:.4f} | {v['gmacs_vs_upper']:.3f} | {v['ms']:.3f} | {v['latency_vs_upper']:.3f} |")
    lines += ["", "The recipe sets width, size and depth with `model.selection_width`, `model.policy_size`, "
              "`model.selection_depth` and `model.selection_groups`; `benchmarks/selection_candidates.py` times "
              "the split network for more of them. These rows are latency only (random weights); the demo's own "
              "choice (train/demo.yaml) and its accuracy are in README's demo section.", ""]
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--bundle", default=str(DEMO_BUNDLE))
    ap.add_argument("--rounds", type=int, default=80)
    ap.add_argument("--warmup", type=int, default=10)
    ap.add_argument("--name", default="fixed_costs_cpu")
    args = ap.parse_args()
    cmd = command_line()
    rng = np.random.default_rng(0)
    with tempfile.TemporaryDirectory() as tmp_dir:
        tmp = Path(tmp_dir)
        bundle, what = demo_bundle(args.bundle, tmp)
        m = open_bundle(bundle).manifest
        clips = [rng.integers(0, 256, (m.num_frames, 64, 64, 3), dtype=np.uint8) for _ in range(16)]
        r = {"command": cmd, "machine": machine_info(threads=1), "bundle": what, "rounds": args.rounds,
             "warmup": args.warmup, "clips": f"16 random uint8 clips of {m.num_frames} x 64x64 (the demo videos' size)"}
        print("per step ...", flush=True)
        r["per_step"] = per_step(bundle, clips, args.rounds, args.warmup)
        r["selection_share"] = {}
        for path in ("old", "new", "new, whole policy.onnx"):
            s = r["per_step"][path]
            upper = s["crop"] + s["backbone input"] + s["backbone"] + s["scores"]
            sel = s["policy input"] + s["selection net"]
            fixed = sum(s[k] for k in STEPS[:-1] if k != "backbone")
            r["selection_share"][path] = {"upper_ms": upper, "selection_ms": sel, "share": sel / upper,
                                          "fixed_share": fixed / upper}
        print("normalisation ...", flush=True)
        r["normalisation"] = normalisation(bundle, clips, args.rounds, args.warmup)
        print("streams ...", flush=True)
        r["streams"] = streams(bundle, args.rounds, args.warmup)
        r["streams_batched"] = streams(bundle, args.rounds, args.warmup, num_streams=BATCHED_STREAMS)
        r["streams_paper_size"] = streams_paper_size(tmp, max(args.rounds // 5, 20), 5)
        print("per call ...", flush=True)
        r["per_call"] = per_call(bundle, args.rounds, args.warmup)
        print("graph normalisation ...", flush=True)
        r["graph_normalisation"] = graph_normalisation(bundle, tmp, clips, args.rounds, args.warmup)
        print("candidates ...", flush=True)
        r["candidates"] = candidates(bundle, tmp, args.rounds, args.warmup)
    out = RESULTS / args.name
    out.with_suffix(".json").write_text(json.dumps(r, indent=2) + "\n", encoding="utf-8")
    text = report(r)
    out.with_suffix(".md").write_text(text, encoding="utf-8")
    print(text)


if __name__ == "__main__":
    main()
