"""``ada3d bench``: latency of every stage configuration and of adaptive inference, against Upper.

Every speed figure is a ratio to Upper (all stages 3D, all T frames) measured in the same process:
the jobs (one per stage mask x T' x batch, plus the selection network) are visited round-robin, in
a fresh shuffled order each repeat, after warm-up, and summarised by medians and p95. A job that
fails becomes a status in its row (Ultralytics style), never a crash of the table.

Memory is measured in fresh subprocesses (`memory_probe`, run as
``python -m ada3d_edge.runtime.bench memory ...``) so the numbers are not polluted by the bench.
No torch import here: the torch backend imports it lazily, and only when asked for.
"""
from __future__ import annotations

import dataclasses
import itertools
from array import array
import json
import os
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterable, Sized
from dataclasses import dataclass
from typing import Any, Callable, Sequence

import numpy as np
from tqdm.auto import tqdm

from ..bundle import (BACKBONE_INPUT, POLICY_INPUT, POLICY_NAME, Bundle, BundleError, engine_name,
                      open_bundle, verify_file)
from .backends import make_backend
from .backends.base import Backend, process_peak_rss_mb
from .clips import Clip, ClipSet, generated_clips, list_clips
from .predictor import AdaptivePredictor

Log = Callable[[str], None]


@dataclass(frozen=True)
class Job:
    """One timed call: the backbone of ``mask`` (or the selection net, ``mask='policy'``) on
    ``(batch, 3, frames, S, S)``."""

    mask: str
    frames: int
    batch: int

    @property
    def model(self) -> str:
        return POLICY_NAME if self.mask == POLICY_NAME else engine_name(self.mask)


def latency_stats(samples_ms: Sequence[float]) -> dict[str, float | int] | None:
    """mean / p50 / p95 / min (ms) and the sample count; None when there is no sample."""
    if len(samples_ms) == 0:
        return None
    a = np.asarray(samples_ms, dtype=np.float64)
    return {"mean": float(a.mean()), "p50": float(np.percentile(a, 50)), "p95": float(np.percentile(a, 95)),
            "min": float(a.min()), "n": int(a.size)}


def _short(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0][:160] if text else ''}"


def time_round_robin(backend: Backend, jobs: Sequence[Job], make_input: Callable[[Job], dict[str, np.ndarray]],
                     repeats: int, warmup: int, seed: int = 0, log: Log | None = None
                     ) -> tuple[dict[Job, list[float]], dict[Job, str]]:
    """Time every job ``repeats`` times, round-robin in shuffled order, after ``warmup`` rounds.

    Returns ``(samples_ms, errors)``: a job that raises once gets its error and is not run again.
    """
    inputs = {job: make_input(job) for job in jobs}
    samples: dict[Job, list[float]] = {job: [] for job in jobs}
    errors: dict[Job, str] = {}
    rng = np.random.default_rng(seed)
    for r in range(warmup + repeats):
        order = [jobs[i] for i in rng.permutation(len(jobs))]
        for job in order:
            if job in errors:
                continue
            t0 = time.perf_counter()
            try:
                backend.run(job.model, inputs[job])
            except Exception as exc:  # noqa: BLE001 - a failing configuration becomes a status
                errors[job] = _short(exc)
                continue
            if r >= warmup:
                samples[job].append((time.perf_counter() - t0) * 1e3)
        if log:
            log(f"  round {r + 1}/{warmup + repeats}{' (warm-up)' if r < warmup else ''}")
    return samples, errors


def input_maker(bundle: Bundle, seed: int = 0) -> Callable[[Job], dict[str, np.ndarray]]:
    """Random normalised inputs per job; arrays of the same shape are shared between jobs."""
    m = bundle.manifest
    cache: dict[tuple, np.ndarray] = {}
    rng = np.random.default_rng(seed)

    def make(job: Job) -> dict[str, np.ndarray]:
        size = m.policy_size if job.mask == POLICY_NAME else m.crop_size
        shape = (job.batch, 3, job.frames, size, size)
        if shape not in cache:
            cache[shape] = rng.standard_normal(shape, dtype=np.float32)
        return {POLICY_INPUT if job.mask == POLICY_NAME else BACKBONE_INPUT: cache[shape]}

    return make


# --- loading -----------------------------------------------------------------------------------


def check_files(bundle: Bundle) -> dict[str, str]:
    """sha256 of every ONNX file; returns ``{model name: error}`` for the corrupt ones."""
    m = bundle.manifest
    bad = {}
    for name, entry in [(POLICY_NAME, m.policy), *[(engine_name(e.mask), e) for e in m.engines]]:
        try:
            verify_file(bundle.root, entry, check_hash=True)
        except (BundleError, OSError) as exc:
            bad[name] = _short(exc)
    return bad


def load_models(backend: Backend, bundle: Bundle, names: Sequence[str], skip: dict[str, str]) -> dict[str, str]:
    """Load each model not already loaded; returns ``{name: error}`` for those that fail."""
    errors = dict((n, e) for n, e in skip.items() if n in names)
    for name in names:
        if name in errors or name in backend.names:
            continue
        key = POLICY_NAME if name == POLICY_NAME else name.removeprefix("backbone_")
        try:
            if backend.file_kind == "plan":
                plans = bundle.trt_engines(key)
                if not plans:
                    raise BundleError(f"no TensorRT plan for {name}; run `ada3d build-engines`")
                entry = plans[-1]
            else:
                entry = bundle.manifest.policy if key == POLICY_NAME else bundle.engine(key)
            backend.load(name, bundle.root / entry.file, dataclasses.asdict(entry))
        except Exception as exc:  # noqa: BLE001
            errors[name] = _short(exc)
    return errors


def create_backend(kind: str | Backend, device: str | None, threads: int | None,
                   checkpoint: str | None = None) -> Backend:
    """A backend for the bench: ORT with ``threads`` intra-op threads, TensorRT, or PyTorch modules
    rebuilt from ``checkpoint`` (the bundle holds no PyTorch weights)."""
    if isinstance(kind, Backend):
        return kind
    if kind == "ort":
        return make_backend("ort", device=device, intra_op_threads=threads)
    if kind == "torch":
        if not checkpoint:
            raise ValueError("--backend torch runs the PyTorch model: pass its checkpoint with --checkpoint CKPT")
        return make_backend("torch", device=device, modules=torch_modules(checkpoint, threads))
    return make_backend(kind, device=device)


def torch_modules(checkpoint: str, threads: int | None = None) -> dict[str, Any]:
    """``{policy, backbone_<mask>}`` modules of a checkpoint, with 2D convs over folded frames."""
    import torch  # lazy: the runtime never imports torch unless this backend is asked for

    from ..export.onnx_export import FixedMaskBackbone
    from ..models import all_masks, set_fold_frames
    from ..train.checkpoint import load_model

    if threads:
        torch.set_num_threads(int(threads))
    model, _ = load_model(checkpoint)
    set_fold_frames(model.backbone, True)
    mods: dict[str, Any] = {POLICY_NAME: model.selection}
    for mask in all_masks(model.backbone.num_stages_3d):
        mods[engine_name(mask)] = FixedMaskBackbone(model.backbone, mask).eval()
    return mods


# --- adaptive end to end -----------------------------------------------------------------------


def bench_adaptive(predictor: AdaptivePredictor, clips: Iterable[Clip], passes: int, warmup: int,
                   progress: bool = False) -> dict[str, Any]:
    """Adaptive (``predict``) and Upper (``run_fixed`` all frames, all 3D) clip by clip, interleaved.

    The two alternate which goes first from clip to clip. Accuracy (top-1; multi-label: the top
    class among the clip's labels) and GFLOPs come from the first pass, latencies from every pass.
    Clips are taken one at a time and only running sums are kept, so memory does not grow with
    the number of clips.
    """
    bundle, t = predictor.bundle, predictor.manifest.num_frames
    upper_mask, keep_all = bundle.upper_mask, np.ones(t, dtype=bool)
    for frames, _ in itertools.islice(clips, max(warmup, 1)):
        predictor.predict(frames)
        predictor.run_fixed(frames, keep_all, upper_mask)
    lat = {"adaptive": array("d"), "upper": array("d")}  # 8 bytes a sample
    parts = {"adaptive": {k: array("d") for k in ("policy", "preprocess", "backbone")},
             "upper": {k: array("d") for k in ("preprocess", "backbone")}}
    sums = {w: {"gflops": 0.0, "gflops_backbone": 0.0, "hits": 0, "frames": 0, "stages": 0}
            for w in ("adaptive", "upper")}
    chosen: Counter[str] = Counter()
    n, labelled = 0, True
    total = len(clips) * passes if isinstance(clips, Sized) else None
    with tqdm(total=total, desc="adaptive vs Upper", unit="clip", disable=not progress, leave=False) as bar:
        for p in range(passes):
            for i, (frames, labels) in enumerate(clips):
                order = ("adaptive", "upper") if (i + p) % 2 == 0 else ("upper", "adaptive")
                for which in order:
                    t0 = time.perf_counter()
                    pred = (predictor.predict(frames) if which == "adaptive"
                            else predictor.run_fixed(frames, keep_all, upper_mask))
                    lat[which].append((time.perf_counter() - t0) * 1e3)
                    for k in parts[which]:
                        parts[which][k].append(pred.timings_ms.get(k, 0.0))
                    if p == 0:
                        acc = sums[which]
                        acc["gflops"] += pred.gflops
                        acc["gflops_backbone"] += pred.gflops_backbone
                        acc["hits"] += int(np.argmax(pred.scores)) in labels
                        acc["frames"] += pred.num_frames_kept
                        acc["stages"] += pred.num_3d_stages
                        if which == "adaptive":
                            chosen[f"{pred.stage_mask}/{pred.num_frames_kept}"] += 1
                if p == 0:
                    n += 1
                    labelled = labelled and len(labels) > 0
                bar.update(1)
    if n == 0:
        raise ValueError("no clip to run adaptive vs Upper on")
    out: dict[str, Any] = {}
    for which in ("adaptive", "upper"):
        acc = sums[which]
        out[which] = {
            "latency_ms": latency_stats(lat[which]),
            "parts_ms": {k: float(np.mean(v)) for k, v in parts[which].items()},
            "gflops": acc["gflops"] / n,
            "gflops_backbone": acc["gflops_backbone"] / n,
            "accuracy": acc["hits"] / n if labelled else None,
        }
    out["adaptive"]["mean_frames"] = sums["adaptive"]["frames"] / n
    out["adaptive"]["mean_3d_stages"] = sums["adaptive"]["stages"] / n
    out["adaptive"]["chosen"] = dict(chosen.most_common())
    return out


# --- memory ------------------------------------------------------------------------------------


def proc_status_mb() -> dict[str, float]:
    """VmRSS and VmHWM (peak RSS) of this process in MiB, from /proc/self/status (Linux)."""
    out = {}
    try:
        with open("/proc/self/status", encoding="ascii") as f:
            for line in f:
                key, _, value = line.partition(":")
                if key in ("VmRSS", "VmHWM"):
                    out[key] = float(value.split()[0]) / 1024.0
    except OSError:  # no /proc: the peak alone, from getrusage
        peak = process_peak_rss_mb()
        if peak is not None:
            out["VmHWM"] = peak
    return out


def memory_probe(bundle_path: str, which: str, backend: str = "ort", device: str | None = None,
                 threads: int | None = None, checkpoint: str | None = None) -> dict[str, Any]:
    """Load ``all`` models (policy + 2^K engines, each run at every T') or the ``upper`` engine alone
    (run at T), batch 1; RSS before and after. Meant for a fresh process."""
    if which not in ("all", "upper"):
        raise ValueError(f"which must be 'all' or 'upper', got {which!r}")
    be = create_backend(backend, device, threads, checkpoint)
    before = proc_status_mb()
    bundle = open_bundle(bundle_path, verify=False)
    t = bundle.manifest.num_frames
    names = ([POLICY_NAME] + [engine_name(m) for m in bundle.masks]) if which == "all" else [engine_name(bundle.upper_mask)]
    errors = load_models(be, bundle, names, {})
    make = input_maker(bundle)
    for name in names:
        if name in errors:
            continue
        mask = POLICY_NAME if name == POLICY_NAME else name.removeprefix("backbone_")
        frames = [t] if mask == POLICY_NAME or which == "upper" else range(1, t + 1)
        for f in frames:
            be.run(name, make(Job(mask, f, 1)))
    after = proc_status_mb()
    gpu = be.peak_memory_mb() if (device or "cpu").startswith("cuda") or be.kind == "trt" else None
    return {"which": which, "models": len(names) - len(errors), "errors": errors,
            "baseline_rss_mb": before.get("VmRSS"), "rss_mb": after.get("VmRSS"), "peak_rss_mb": after.get("VmHWM"),
            "loaded_mb": (after["VmRSS"] - before["VmRSS"]) if "VmRSS" in after and "VmRSS" in before else None,
            "gpu_peak_mb": gpu}


def measure_memory(bundle_path: str, backend: str, device: str | None, threads: int | None,
                   checkpoint: str | None = None, timeout: float = 900) -> dict[str, Any]:
    """`memory_probe` for ``upper`` and ``all``, each in its own fresh Python process."""
    out: dict[str, Any] = {}
    for which in ("upper", "all"):
        cmd = [sys.executable, "-m", "ada3d_edge.runtime.bench", "memory", str(bundle_path), which, backend,
               device or "", str(threads or 0), checkpoint or ""]
        try:
            proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, check=False)
            if proc.returncode != 0:
                raise RuntimeError(proc.stderr.strip().splitlines()[-1] if proc.stderr.strip() else f"exit {proc.returncode}")
            out[which] = json.loads(proc.stdout.strip().splitlines()[-1])
        except Exception as exc:  # noqa: BLE001
            out[which] = {"error": _short(exc)}
    return out


# --- the whole bench ---------------------------------------------------------------------------


def _subset(values: Sequence[Any] | None, valid: Sequence[Any], option: str) -> list[Any]:
    if not values:
        return list(valid)
    bad = [v for v in values if v not in valid]
    if bad:
        raise ValueError(f"{option} {bad} not in this bundle; valid: {list(valid)}")
    return list(dict.fromkeys(values))


def run_bench(bundle_path: str | os.PathLike, backend: str | Backend = "ort", device: str | None = None, *,
              data: str | None = None, root: str | None = None, clips: int | None = None, repeats: int = 20,
              warmup: int = 3, batch: int = 4, frames: Sequence[int] | None = None,
              masks: Sequence[str] | None = None, threads: int | None = None, passes: int = 1,
              checkpoint: str | None = None, memory: bool = True, seed: int = 0,
              command: str | None = None, log: Log | None = None, progress: bool = False) -> dict[str, Any]:
    """Measure a bundle: per-configuration latency table, selection net, adaptive vs Upper, memory.

    Returns the JSON-ready result (see `bench_report.format_table` for the console view).
    """
    from .bench_report import assemble, machine_info

    for name, value, low in (("repeats", repeats, 1), ("warmup", warmup, 0), ("batch", batch, 1),
                             ("passes", passes, 1)):
        if int(value) < low:
            raise ValueError(f"--{name} must be >= {low}, got {value}")
    say = log or (lambda _msg: None)
    bundle = open_bundle(bundle_path, verify=False)
    m = bundle.manifest
    t = m.num_frames
    masks = _subset(masks, bundle.masks, "--masks")
    frames = sorted(_subset(frames, list(range(1, t + 1)), "--frames"), reverse=True)
    if data:  # clips first: a bad --data fails before minutes of timing
        if not root:
            raise ValueError("--data needs --root (the folder the list's paths start from)")
        clip_set: ClipSet = list_clips(bundle, data, root, clips, say)
    else:
        clip_set = generated_clips(bundle, clips or 16, seed)
    clip_source = clip_set.description
    corrupt = check_files(bundle)
    be = create_backend(backend, device, threads, checkpoint)
    try:
        predictor, adaptive_error = None, None
        if corrupt:
            adaptive_error = "bundle files failed verification: " + ", ".join(sorted(corrupt))
        else:
            try:
                predictor = AdaptivePredictor(bundle, backend=be, warmup=False)
            except Exception as exc:  # noqa: BLE001
                adaptive_error = _short(exc)
        load_errors = load_models(be, bundle, [POLICY_NAME] + [engine_name(k) for k in bundle.masks], corrupt)
        batches = sorted({1, int(batch)})
        jobs = [Job(k, f, b) for b in batches for k in masks for f in frames]
        jobs += [Job(bundle.upper_mask, t, b) for b in batches if Job(bundle.upper_mask, t, b) not in jobs]
        jobs += [Job(POLICY_NAME, t, b) for b in batches]
        runnable = [j for j in jobs if j.model not in load_errors]
        say(f"timing {len(runnable)} jobs round-robin: {warmup} warm-up + {repeats} rounds")
        samples, errors = time_round_robin(be, runnable, input_maker(bundle, seed), repeats, warmup, seed, say)
        errors.update({j: load_errors[j.model] for j in jobs if j.model in load_errors})
        e2e = None
        if predictor is not None:
            say(f"adaptive vs Upper end to end on {clip_source.split(':')[0]}, {passes} pass(es)")
            try:
                predictor.warmup()  # every engine at every T', as the runtime does at start-up
                e2e = bench_adaptive(predictor, clip_set, passes, warmup, progress)
            except Exception as exc:  # noqa: BLE001 - the adaptive section becomes a status
                adaptive_error = _short(exc)
        mem = measure_memory(str(bundle.root), be.kind if isinstance(backend, Backend) else backend, device,
                             threads, checkpoint) if memory else None
        info = machine_info(be, threads)
    finally:
        if predictor is not None:
            predictor.close()
        be.close()
    return assemble(bundle, jobs, samples, errors, e2e, clip_source, adaptive_error, mem, info,
                    {"repeats": repeats, "warmup": warmup, "batches": batches, "passes": passes, "seed": seed},
                    command)


if __name__ == "__main__":  # python -m ada3d_edge.runtime.bench memory BUNDLE all|upper BACKEND DEVICE THREADS [CKPT]
    if len(sys.argv) < 7 or sys.argv[1] != "memory":
        sys.exit("usage: python -m ada3d_edge.runtime.bench memory BUNDLE all|upper BACKEND DEVICE THREADS [CKPT]")
    _, _, _path, _which, _backend, _device, _threads, *_rest = sys.argv
    print(json.dumps(memory_probe(_path, _which, _backend, _device or None, int(_threads) or None,
                                  (_rest[0] if _rest else "") or None)))
