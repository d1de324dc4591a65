"""``ada3d bench``: latency of every stage configuration and of adaptive inference, against Upper.

Every speed figure is a ratio to Upper (all stages 3D, all T frames) measured in the same process:
the jobs (one per stage mask x T' x batch, plus the selection network) are visited round-robin, in
a fresh shuffled order each repeat, after warm-up, and summarised by medians and p95. A job that
fails becomes a status in its row (Ultralytics style), never a crash of the table.

Memory is measured in fresh spawned processes (`memory_probe`) so the numbers are not polluted by
the bench. The runtime takes backends (a kind, an instance or a factory), it does not build models:
the PyTorch reference is ``ada3d_edge.bench_torch``'s factory.
"""
from __future__ import annotations

import functools
import itertools
import multiprocessing
import os
import time
from array import array
from collections import Counter
from collections.abc import Iterable, Sized
from dataclasses import dataclass
from typing import Any, Callable, Sequence

import numpy as np
from tqdm.auto import tqdm

from ..bundle import (BACKBONE_INPUT, BACKBONE_MASK_INPUT, BACKBONE_NAME, POLICY_FEATURES, POLICY_FEATURES_NAME,
                      POLICY_INPUT, POLICY_NAME, Bundle, BundleError, open_bundle, verify_file)
from .backends import make_backend
from .backends.base import Backend, process_peak_rss_mb
from .bench_report import BenchResult, Measurements, assemble, machine_info
from .clips import Clip, ClipSet, generated_clips, list_clips
from .loading import bundle_model_names, load_bundle_model
from .predictor import AdaptivePredictor, stage_mask_feed
from .split_heads import SplitHeads
from .stats import latency_stats

Log = Callable[[str], None]


@dataclass(frozen=True)
class Job:
    """One timed call: model ``model`` (``policy`` or ``backbone``) on ``(batch, 3, frames, S, S)``;
    ``mask``: the backbone's stage configuration (its ``stage_mask`` feed), None for the selection net."""

    model: str
    frames: int
    batch: int
    mask: str | None = None

    @classmethod
    def backbone(cls, mask: str, frames: int, batch: int) -> "Job":
        """The backbone in stage configuration ``mask``."""
        return cls(BACKBONE_NAME, frames, batch, mask)

    @property
    def is_policy(self) -> bool:
        """Whether this times the selection net."""
        return self.model == POLICY_NAME


@dataclass(frozen=True)
class BenchOptions:
    """What `run_bench` measures and how (the `ada3d bench` options)."""

    data: str | None = None  # list file of videos for the end-to-end run (None: generated clips)
    root: str | None = None  # folder of the list's paths
    clips: int | None = None  # videos taken from ``data`` (all: None), or generated clips (16)
    repeats: int = 20
    warmup: int = 3
    batch: int = 4  # the larger batch timed besides 1
    frames: Sequence[int] | None = None  # T' subset (None: 1..T)
    masks: Sequence[str] | None = None  # stage masks subset (None: all)
    passes: int = 1
    cap: float | None = None  # the predictor's frame cap (``frame_cap``; None: off)
    cap_lut: str | None = None  # its latency table (None: the cap bounds GFLOPs)
    memory: bool = True
    seed: int = 0
    progress: bool = False

    def __post_init__(self) -> None:
        for name, low in (("repeats", 1), ("warmup", 0), ("batch", 1), ("passes", 1)):
            if int(getattr(self, name)) < low:
                raise ValueError(f"--{name} must be >= {low}, got {getattr(self, name)}")
        if self.data and not self.root:
            raise ValueError("--data needs --root (the folder the list's paths start from)")
        if self.cap is not None and not self.cap > 0:
            raise ValueError(f"--cap must be > 0 (a multiple of Upper's GFLOPs), got {self.cap}")
        if self.cap_lut and self.cap is None:
            raise ValueError("--cap-lut is the latency table of --cap: give --cap too")


def _short(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0][:160] if text else ''}"


Runner = Callable[[Backend, dict[str, np.ndarray]], Any]


def split_policy_runner(bundle: Bundle) -> Runner:
    """The selection net as the predictor runs a split bundle's: the frame terms of the B x T frames
    of ``(B, T, 3, P, P)`` in one call, their mean per clip, the heads (numpy when the manifest
    records their bias, else ``policy_heads``)."""
    heads = SplitHeads(bundle.manifest.policy_split, bundle.manifest.num_frames)

    def run(backend: Backend, inputs: dict[str, np.ndarray]) -> None:
        x = inputs[POLICY_INPUT]
        b, t = x.shape[:2]
        terms = backend.run(POLICY_FEATURES_NAME, {POLICY_INPUT: x.reshape(b * t, *x.shape[2:])})[POLICY_FEATURES]
        heads(backend, terms.reshape(b, t, -1).mean(axis=1, dtype=np.float32))

    return run


def _selection_net_label(bundle: Bundle, split: bool) -> str:
    """How the bench ran the selection net (the settings' ``selection_net``)."""
    if not split:
        return "whole policy"
    return f"split (frame terms, mean, {'numpy heads' if bundle.manifest.policy_split.head_bias is not None else 'heads'})"


def time_round_robin(backend: Backend, jobs: Sequence[Job], make_input: Callable[[Job], dict[str, np.ndarray]],
                     repeats: int, warmup: int, seed: int = 0, log: Log | None = None,
                     runners: dict[str, Runner] | None = None) -> tuple[dict[Job, list[float]], dict[Job, str]]:
    """Time every job ``repeats`` times, round-robin in shuffled order, after ``warmup`` rounds.

    ``runners``: model name -> what runs one call of its jobs (default ``backend.run(model, inputs)``;
    the split selection net is ``split_policy_runner``).
    Returns ``(samples_ms, errors)``: a job that raises once gets its error and is not run again.
    """
    runners = runners or {}
    inputs = {job: make_input(job) for job in jobs}
    samples: dict[Job, list[float]] = {job: [] for job in jobs}
    errors: dict[Job, str] = {}
    rng = np.random.default_rng(seed)
    for r in range(warmup + repeats):
        order = [jobs[i] for i in rng.permutation(len(jobs))]
        for job in order:
            if job in errors:
                continue
            runner = runners.get(job.model)
            t0 = time.perf_counter()
            try:
                if runner is None:
                    backend.run(job.model, inputs[job])
                else:
                    runner(backend, inputs[job])
            except Exception as exc:  # noqa: BLE001 - a failing configuration becomes a status
                errors[job] = _short(exc)
                continue
            if r >= warmup:
                samples[job].append((time.perf_counter() - t0) * 1e3)
        if log:
            log(f"  round {r + 1}/{warmup + repeats}{' (warm-up)' if r < warmup else ''}")
    return samples, errors


def input_maker(bundle: Bundle, seed: int = 0, split_policy: bool = False) -> Callable[[Job], dict[str, np.ndarray]]:
    """Random normalised inputs per job; arrays of the same shape are shared between jobs. With
    ``split_policy`` the selection net's input is frame-major, ``(B, T, 3, P, P)``, for
    ``split_policy_runner``."""
    m = bundle.manifest
    cache: dict[tuple, np.ndarray] = {}
    rng = np.random.default_rng(seed)

    def make(job: Job) -> dict[str, np.ndarray]:
        size = m.policy_size if job.is_policy else m.crop_size
        shape = (job.batch, 3, job.frames, size, size)
        if shape not in cache:
            cache[shape] = rng.standard_normal(shape, dtype=np.float32)
        if job.is_policy and split_policy:
            return {POLICY_INPUT: np.ascontiguousarray(cache[shape].transpose(0, 2, 1, 3, 4))}
        if job.is_policy:
            return {POLICY_INPUT: cache[shape]}
        return {BACKBONE_INPUT: cache[shape], BACKBONE_MASK_INPUT: stage_mask_feed(job.mask)}

    return make


# --- loading -----------------------------------------------------------------------------------


def check_files(bundle: Bundle) -> dict[str, str]:
    """sha256 of every ONNX file (the backbone's: graph, weights file, segment files); returns
    ``{model name: error}`` for the models with a corrupt file."""
    m = bundle.manifest
    bad = {}
    for name, entries in ((POLICY_NAME, [m.policy]), (BACKBONE_NAME, m.backbone.files())):
        for entry in entries:
            try:
                verify_file(bundle.root, entry, check_hash=True)
            except (BundleError, OSError) as exc:
                bad[name] = _short(exc)
                break
    return bad


def load_models(backend: Backend, bundle: Bundle, names: Sequence[str], skip: dict[str, str]) -> dict[str, str]:
    """Load each model not already loaded (`loading.load_bundle_model`); returns ``{name: error}``."""
    errors = dict((n, e) for n, e in skip.items() if n in names)
    for name in names:
        if name in errors or name in backend.names:
            continue
        try:
            load_bundle_model(backend, bundle, name)
        except Exception as exc:  # noqa: BLE001 - a model that does not load becomes a status
            errors[name] = _short(exc)
    return errors


BackendFactory = Callable[[], Backend]


def backend_factory(backend: str | Backend | BackendFactory, device: str | None,
                    threads: int | None, **ort_options: Any) -> BackendFactory:
    """A picklable zero-argument factory for the backend the bench measures.

    A kind makes that backend (ort with ``threads`` intra-op threads); a Backend instance is re-made
    by its kind (for the memory probes, which run in fresh processes); a factory is kept.
    ``ort_options``: more ort backend options (``layout``). The torch
    backend needs its modules: pass ``ada3d_edge.bench_torch.torch_backend_factory(checkpoint)``.
    """
    if isinstance(backend, Backend):
        backend = backend.kind
    if isinstance(backend, str):
        options = {"intra_op_threads": threads, **ort_options} if backend == "ort" else {}
        return functools.partial(make_backend, backend, device, **options)
    return backend


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
    out["adaptive"]["cap"], out["adaptive"]["cap_basis"] = predictor.cap, predictor.cap_basis
    return out


# --- memory ------------------------------------------------------------------------------------


SMAPS_ROLLUP = "/proc/self/smaps_rollup"


def process_memory_mb(smaps_rollup: str = SMAPS_ROLLUP, status: str = "/proc/self/status") -> dict[str, Any]:
    """This process's memory in MiB: ``pss``, ``uss`` (private clean + dirty), ``rss``, ``peak_rss``.

    PSS and USS come from ``/proc/self/smaps_rollup`` (Linux >= 4.14): PSS splits each shared page
    between the processes (and mappings) that map it, so a weights file mapped by several models
    counts once, where RSS counts it per mapping. ``source`` says what was read: ``smaps_rollup``, or
    ``status (RSS only: no smaps_rollup)`` / ``getrusage (peak RSS only: no /proc)`` where it is absent.
    """
    out: dict[str, Any] = {}
    try:
        with open(smaps_rollup, encoding="ascii") as f:
            kb = {}
            for line in f:
                key, _, value = line.partition(":")
                parts = value.split()
                if parts and parts[0].isdigit():
                    kb[key.strip()] = int(parts[0])
        if "Pss" in kb:
            out["pss"] = kb["Pss"] / 1024.0
            out["uss"] = (kb.get("Private_Clean", 0) + kb.get("Private_Dirty", 0)) / 1024.0
            out["rss"] = kb.get("Rss", 0) / 1024.0
            out["source"] = "smaps_rollup"
    except OSError:
        pass
    try:
        with open(status, encoding="ascii") as f:
            for line in f:
                key, _, value = line.partition(":")
                if key == "VmHWM":
                    out["peak_rss"] = float(value.split()[0]) / 1024.0
                elif key == "VmRSS" and "rss" not in out:
                    out["rss"] = float(value.split()[0]) / 1024.0
        out.setdefault("source", "status (RSS only: no smaps_rollup)")
    except OSError:  # no /proc: the peak alone, from getrusage
        peak = process_peak_rss_mb()
        if peak is not None:
            out["peak_rss"] = peak
        out.setdefault("source", "getrusage (peak RSS only: no /proc)")
    return out


def memory_probe(bundle_path: str, which: str, factory: BackendFactory) -> dict[str, Any]:
    """Load the backbone (and, for ``all``, the selection net), run every configuration (``all``) or
    Upper alone (``upper``) at every T' 1..T, batch 1; PSS/USS/RSS before and after. Meant for a
    fresh process (`measure_memory`)."""
    if which not in ("all", "upper"):
        raise ValueError(f"which must be 'all' or 'upper', got {which!r}")
    before = process_memory_mb()
    be = factory()
    try:
        bundle = open_bundle(bundle_path, verify=False)
        t = bundle.manifest.num_frames
        names = bundle_model_names(bundle) if which == "all" else [BACKBONE_NAME]
        if which == "upper" and getattr(be, "loads_backbone_from_bundle", False):  # ort: Upper's graph only
            be.load_bundle_backbone(bundle, masks=[bundle.upper_mask])
            errors = {}
        else:
            errors = load_models(be, bundle, names, {})
        make = input_maker(bundle)
        masks = bundle.masks if which == "all" else [bundle.upper_mask]
        jobs = ([Job(POLICY_NAME, t, 1)] if POLICY_NAME in names else []) + [
            Job.backbone(mask, f, 1) for mask in masks for f in range(t, 0, -1)]
        for job in jobs:
            if job.model not in errors:
                be.run(job.model, make(job))
        after = process_memory_mb()
        gpu = be.peak_memory_mb() if be.kind != "ort" or "CPUExecutionProvider" not in be.describe() else None
    finally:
        be.close()

    def grown(key: str) -> float | None:
        return after[key] - before[key] if key in after and key in before else None

    return {"which": which, "models": len(names) - len(errors), "configs": len(masks), "errors": errors,
            "source": after.get("source"), "pss_mb": after.get("pss"), "uss_mb": after.get("uss"),
            "rss_mb": after.get("rss"), "peak_rss_mb": after.get("peak_rss"),
            "baseline_pss_mb": before.get("pss"), "baseline_rss_mb": before.get("rss"),
            "loaded_pss_mb": grown("pss"), "loaded_uss_mb": grown("uss"), "loaded_rss_mb": grown("rss"),
            "gpu_peak_mb": gpu}


def measure_memory(bundle_path: str, factory: BackendFactory, timeout: float = 900,
                   which_probes: Sequence[str] = ("upper", "all")) -> dict[str, Any]:
    """`memory_probe` for ``upper`` and ``all``, each in its own fresh (spawned) Python process."""
    out: dict[str, Any] = {}
    ctx = multiprocessing.get_context("spawn")
    for which in which_probes:
        try:
            with ctx.Pool(1) as pool:
                out[which] = pool.apply_async(memory_probe, (str(bundle_path), which, factory)).get(timeout)
        except Exception as exc:  # noqa: BLE001 - a probe that fails becomes a status
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


def run_bench(bundle_path: str | os.PathLike, backend: str | Backend | BackendFactory = "ort",
              options: BenchOptions = BenchOptions(), *, device: str | None = None, threads: int | None = None,
              command: str | None = None, log: Log | None = None) -> BenchResult:
    """Measure a bundle: per-configuration latency table, selection net, adaptive vs Upper, memory.

    ``backend`` is a kind of the backend table (ort with ``threads`` intra-op threads), a Backend
    instance (not closed here) or a zero-argument factory (e.g. ``bench_torch.torch_backend_factory``).
    Returns the result rows (``to_json`` for the JSON, `bench_report.format_table` for the console).
    """
    o = options
    say = log or (lambda _msg: None)
    bundle = open_bundle(bundle_path, verify=False)
    t = bundle.manifest.num_frames
    masks = _subset(o.masks, bundle.masks, "--masks")
    frames = sorted(_subset(o.frames, list(range(1, t + 1)), "--frames"), reverse=True)
    cap_lut = None
    if o.cap_lut:  # read once; a table of another model fails now, not as the adaptive section's status
        from ..latency_lut import load_checked_lut

        m = bundle.manifest
        cap_lut = load_checked_lut(o.cap_lut, m.arch, m.num_frames, m.num_stages, m.crop_size, where="--cap-lut",
                                   against="bundle")
    # clips first: a bad --data fails before minutes of timing
    clip_set = list_clips(bundle, o.data, o.root, o.clips, say) if o.data else generated_clips(bundle, o.clips or 16, o.seed)
    corrupt = check_files(bundle)
    factory = backend_factory(backend, device, threads)
    be = backend if isinstance(backend, Backend) else factory()
    predictor, adaptive_error, e2e = None, None, None
    split = False  # whether the selection net is timed as the split the predictor runs
    try:
        if corrupt:
            adaptive_error = "bundle files failed verification: " + ", ".join(sorted(corrupt))
        else:
            try:
                predictor = AdaptivePredictor(bundle, backend=be, warmup=False, cap=o.cap, cap_lut=cap_lut)
            except Exception as exc:  # noqa: BLE001
                adaptive_error = _short(exc)
        load_errors = load_models(be, bundle, bundle_model_names(bundle), corrupt)
        batches = sorted({1, int(o.batch)})
        jobs = [Job.backbone(k, f, b) for b in batches for k in masks for f in frames]
        jobs += [j for j in (Job.backbone(bundle.upper_mask, t, b) for b in batches) if j not in jobs]
        jobs += [Job(POLICY_NAME, t, b) for b in batches]
        runnable = [j for j in jobs if j.model not in load_errors]
        say(f"timing {len(runnable)} jobs round-robin: {o.warmup} warm-up + {o.repeats} rounds")
        split = predictor is not None and predictor.split_policy
        samples, errors = time_round_robin(be, runnable, input_maker(bundle, o.seed, split), o.repeats, o.warmup,
                                           o.seed, say, {POLICY_NAME: split_policy_runner(bundle)} if split else None)
        errors.update({j: load_errors[j.model] for j in jobs if j.model in load_errors})
        if predictor is not None:
            say(f"adaptive vs Upper end to end on {clip_set.description.split(':')[0]}, {o.passes} pass(es)")
            try:
                predictor.warmup()  # every engine at every T', as the runtime does at start-up
                e2e = bench_adaptive(predictor, clip_set, o.passes, o.warmup, o.progress)
            except Exception as exc:  # noqa: BLE001 - the adaptive section becomes a status
                adaptive_error = _short(exc)
        memory = measure_memory(str(bundle.root), factory) if o.memory else None
        info = machine_info(be, threads)
    finally:
        if predictor is not None:
            predictor.close()
        if not isinstance(backend, Backend):
            be.close()
    settings = {"repeats": o.repeats, "warmup": o.warmup, "batches": batches, "passes": o.passes, "seed": o.seed,
                "selection_net": _selection_net_label(bundle, split)}
    return assemble(bundle, Measurements(jobs=jobs, samples=samples, errors=errors, end_to_end=e2e,
                                         clip_source=clip_set.description, adaptive_error=adaptive_error,
                                         memory=memory, machine=info, settings=settings, command=command))
