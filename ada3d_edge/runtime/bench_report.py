"""The bench's result: typed rows and sections (``to_json``), the console table, the plot.

`assemble` turns `bench.run_bench`'s raw measurements into a ``BenchResult``; this module imports
nothing from ``bench`` (no cycle). No torch; matplotlib is imported only by `plot`.
"""
from __future__ import annotations

import datetime as _dt
import json
import os
import platform
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any, Mapping, Sequence, Union

from ..bundle import Bundle
from .backends.base import Backend
from .stats import LatencyStats, latency_stats

# Targets the project reports against (ARCHITECTURE.md section 6, issue 5).
TARGET_SAVING_EFFICIENCY = 0.90  # adaptive latency saving / GFLOPs saving
TARGET_POLICY_FRACTION = 0.05  # selection net latency / Upper latency


def cpu_model() -> str:
    """CPU model name from /proc/cpuinfo (Linux), else platform.processor()."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as f:
            for line in f:
                if line.lower().startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def machine_info(backend: Backend | None = None, threads: int | None = None) -> dict[str, Any]:
    """What the numbers were measured on: CPU, cores, OS, library versions, backend, threads, load."""
    import numpy

    info: dict[str, Any] = {
        "cpu": cpu_model(), "cores": os.cpu_count(),
        "cores_usable": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None,
        "os": platform.platform(), "python": platform.python_version(), "numpy": numpy.__version__,
        "threads": threads if threads else "backend default",
        "omp_num_threads": os.environ.get("OMP_NUM_THREADS"),
        "loadavg": list(os.getloadavg()) if hasattr(os, "getloadavg") else None,
        "date": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
    }
    try:
        import onnxruntime

        info["onnxruntime"] = onnxruntime.__version__
    except ImportError:
        info["onnxruntime"] = None
    if backend is not None:
        info["backend"] = backend.kind
        info["backend_detail"] = backend.describe()
    return info


def _ratio(a: float | None, b: float | None) -> float | None:
    return None if a is None or not b else a / b


def _json(x: Any) -> Any:
    """Dataclasses (``to_json``), dicts, lists and tuples made plain JSON values."""
    if hasattr(x, "to_json"):
        return x.to_json()
    if isinstance(x, Mapping):
        return {k: _json(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_json(v) for v in x]
    return x


@dataclass(frozen=True)
class Measurements:
    """What `bench.run_bench` measured, before it is turned into rows."""

    jobs: Sequence[Any]  # bench.Job
    samples: Mapping[Any, Sequence[float]]
    errors: Mapping[Any, str]
    end_to_end: Mapping[str, Any] | None
    clip_source: str | None
    adaptive_error: str | None
    memory: Mapping[str, Any] | None
    machine: Mapping[str, Any]
    settings: Mapping[str, Any]
    command: str | None


@dataclass(frozen=True)
class ConfigRow:
    """One timed configuration (a backbone's stage mask, or the selection net) at T' and batch."""

    model: str
    mask: str | None  # None: the selection net
    frames: int
    batch: int
    status: str  # "ok" or "error: ..."
    latency_ms: LatencyStats | None
    latency_ratio: float | None  # p50 / Upper's p50 at the same batch
    p95_ratio: float | None
    clips_per_s: float | None
    gflops: float | None = None
    gflops_ratio: float | None = None

    def to_json(self) -> dict[str, Any]:
        out = {f.name: _json(getattr(self, f.name)) for f in fields(self) if f.name != "model"}
        out["mask"] = self.mask if self.mask is not None else self.model
        if self.mask is None:
            del out["gflops"], out["gflops_ratio"]
        return out


@dataclass
class BenchResult:
    """The whole bench: per-configuration rows, the selection net, adaptive vs Upper, memory, targets."""

    bundle: str
    arch: str
    stages: list[str]
    num_frames: int
    crop_size: int
    upper_mask: str
    settings: dict[str, Any]
    clips: str | None
    upper: dict[str, Any]
    policy: dict[str, Any]
    adaptive: dict[str, Any]
    configs: list[ConfigRow]
    memory_mb: dict[str, Any] | None
    machine: dict[str, Any]
    command: str | None
    targets: dict[str, Any]

    def to_json(self) -> dict[str, Any]:
        """Plain JSON values, the keys in the order they were written since format 1."""
        return {f.name: _json(getattr(self, f.name)) for f in fields(self)}


ResultLike = Union[BenchResult, Mapping[str, Any]]


def _plain(r: ResultLike) -> Mapping[str, Any]:
    return r.to_json() if isinstance(r, BenchResult) else r


def assemble(bundle: Bundle, meas: Measurements) -> BenchResult:
    """The result from the raw measurements of `bench.run_bench`."""
    m = bundle.manifest
    t, upper_mask = m.num_frames, bundle.upper_mask
    upper_gflops = bundle.gflops(upper_mask, t)
    stats = {j: latency_stats(meas.samples.get(j, [])) for j in meas.jobs}
    upper_by_batch = {j.batch: stats[j] for j in meas.jobs if j.mask == upper_mask and j.frames == t}
    configs, policy_rows = [], []
    for j in meas.jobs:
        s, ref = stats[j], upper_by_batch.get(j.batch)
        cost = {} if j.mask is None else {"gflops": bundle.gflops(j.mask, j.frames),
                                          "gflops_ratio": bundle.gflops(j.mask, j.frames) / upper_gflops}
        row = ConfigRow(model=j.model, mask=j.mask, frames=j.frames, batch=j.batch,
                        status="ok" if j not in meas.errors and s else f"error: {meas.errors.get(j, 'no sample')}",
                        latency_ms=s, latency_ratio=_ratio(s and s.p50, ref and ref.p50),
                        p95_ratio=_ratio(s and s.p95, ref and ref.p95),
                        clips_per_s=(1e3 * j.batch / s.p50) if s else None, **cost)
        (policy_rows if j.mask is None else configs).append(row)
    pol1 = next((r for r in policy_rows if r.batch == 1), None)
    up1 = upper_by_batch.get(1)
    pol_lat = pol1.latency_ms if pol1 else None
    result = BenchResult(
        bundle=str(bundle.root), arch=m.arch, stages=list(m.stages), num_frames=t, crop_size=m.crop_size,
        upper_mask=upper_mask, settings=dict(meas.settings), clips=meas.clip_source,
        upper={"gflops": upper_gflops, "latency_ms": up1, "latency_source": "engine only (batch 1)",
               "engine_latency_ms": up1, "accuracy": None},
        policy={"gflops": bundle.policy_gflops(), "latency_ms": pol_lat,
                "fraction_of_upper": pol1 and _ratio(pol_lat and pol_lat.p50, up1 and up1.p50),
                "fraction_of_upper_mean": pol1 and _ratio(pol_lat and pol_lat.mean, up1 and up1.mean),
                "rows": policy_rows},
        adaptive={"status": "ok" if meas.end_to_end else f"error: {meas.adaptive_error}", "gflops": None,
                  "latency_ms": None, "accuracy": None},
        configs=configs, memory_mb=_memory(meas.memory), machine=dict(meas.machine), command=meas.command,
        targets={})
    if meas.end_to_end:
        up, ad = meas.end_to_end["upper"], meas.end_to_end["adaptive"]
        result.upper.update({k: up[k] for k in ("latency_ms", "parts_ms", "accuracy")})
        result.upper["latency_source"] = "end to end: preprocess + Upper engine on all T frames"
        lat_saving = 1.0 - ad["latency_ms"].mean / up["latency_ms"].mean
        gf_saving = 1.0 - ad["gflops"] / up["gflops"]
        result.adaptive.update(ad)
        result.adaptive.update({"latency_saving": lat_saving, "gflops_saving": gf_saving,
                                "saving_efficiency": lat_saving / gf_saving if gf_saving > 0 else None})
    result.targets = _targets(result)
    return result


def _memory(memory: Mapping[str, Any] | None) -> dict[str, Any] | None:
    """PSS (and USS) of a fresh process with every configuration loaded and run, against Upper alone.

    ``unit`` says what the numbers are: ``PSS`` from /proc/self/smaps_rollup, or ``RSS`` where that
    is absent (RSS counts a shared weights file once per mapping: not comparable).
    """
    if memory is None:
        return None
    probes = {which: memory.get(which) or {} for which in ("all", "upper")}
    pss = all(p.get("pss_mb") is not None for p in probes.values())
    unit = "PSS" if pss else "RSS"
    out: dict[str, Any] = {"unit": unit, "all_engines": None, "upper_only": None, "detail": dict(memory)}
    for key, which in (("all_engines", "all"), ("upper_only", "upper")):
        probe = probes[which]
        out[key] = probe.get("pss_mb") if pss else probe.get("rss_mb")
        out[key + "_uss"] = probe.get("uss_mb")
        out[key + "_loaded"] = probe.get("loaded_pss_mb") if pss else probe.get("loaded_rss_mb")
        out[key + "_gpu"] = probe.get("gpu_peak_mb")
    out["ratio"] = _ratio(out["all_engines"], out["upper_only"])
    out["source"] = ", ".join(sorted({str(p.get("source")) for p in probes.values() if p.get("source")})) or None
    out["note"] = (f"{unit} of a fresh process after loading the backbone and running every configuration "
                   "(all_engines, with the selection net) or Upper alone (upper_only) at every T', batch 1; "
                   f"*_loaded = {unit} growth over the process before loading (runtime libraries excluded)"
                   + ("" if pss else "; no /proc/self/smaps_rollup here, so RSS, which counts shared pages "
                      "once per mapping"))
    return out


def _targets(r: BenchResult) -> dict[str, Any]:
    ad, up, pol = r.adaptive, r.upper, r.policy
    eff = ad.get("saving_efficiency")
    frac = pol.get("fraction_of_upper")
    p95a = ad["latency_ms"].p95 if ad.get("latency_ms") else None
    p95u = up["latency_ms"].p95 if up.get("latency_ms") else None
    return {
        "saving_efficiency": {"value": eff, "target": f">= {TARGET_SAVING_EFFICIENCY}",
                              "met": None if eff is None else eff >= TARGET_SAVING_EFFICIENCY},
        "policy_fraction": {"value": frac, "target": f"<= {TARGET_POLICY_FRACTION}",
                            "met": None if frac is None else frac <= TARGET_POLICY_FRACTION},
        "p95_no_worse": {"value": _ratio(p95a, p95u), "target": "adaptive p95 <= Upper p95",
                         "met": None if p95a is None or p95u is None else p95a <= p95u},
    }


# --- output ------------------------------------------------------------------------------------


def _f(x: Any, fmt: str = ".2f") -> str:
    return "-" if x is None else format(x, fmt)


def saving_phrase(saving: float) -> str:
    """``0.25`` -> "saves 25.0%", ``-0.118`` -> "costs 11.8% more" (never "saves -11.8%")."""
    return f"saves {saving:.1%}" if saving >= 0 else f"costs {-saving:.1%} more"


def _efficiency(eff: float | None) -> str:
    return "n/a: no GFLOPs saved" if eff is None else f"{eff:.2f}"


def format_table(result: ResultLike) -> str:
    """Console report: configuration table, selection net, adaptive vs Upper, memory, targets."""
    r = _plain(result)
    mc = r["machine"]
    lines = [f"{r['arch']} bundle {r['bundle']}: T={r['num_frames']}, crop {r['crop_size']}, stages "
             f"{','.join(r['stages'])} (1 = 3D); Upper = {r['upper_mask']} on {r['num_frames']} frames",
             f"{mc.get('backend_detail', mc.get('backend'))}, threads {mc['threads']}; {mc['cpu']} "
             f"({mc['cores']} cores), load {_f((mc.get('loadavg') or [None])[0])}",
             f"round-robin: {r['settings']['warmup']} warm-up + {r['settings']['repeats']} rounds, shuffled; "
             "ratios are to Upper at the same batch", "",
             f"{'mask':>6} {'T':>3} {'B':>2} {'GFLOPs':>8} {'ratio':>6} {'p50 ms':>9} {'p95 ms':>9} "
             f"{'lat ratio':>9} {'clips/s':>8}  status"]
    for c in r["configs"]:
        s = c["latency_ms"] or {}
        lines.append(f"{c['mask']:>6} {c['frames']:>3} {c['batch']:>2} {c['gflops']:>8.3f} {c['gflops_ratio']:>6.3f} "
                     f"{_f(s.get('p50')):>9} {_f(s.get('p95')):>9} {_f(c['latency_ratio'], '.3f'):>9} "
                     f"{_f(c['clips_per_s'], '.1f'):>8}  {c['status']}")
    pol = r["policy"]
    kind = r["settings"].get("selection_net")
    lines += ["", f"selection net (T={r['num_frames']}, batch 1{', ' + kind if kind else ''}): "
                  f"{_f((pol['latency_ms'] or {}).get('p50'))} ms p50, "
                  f"{_f(pol['fraction_of_upper'], '.3f')} of Upper's engine latency (p50), "
                  f"{_f(pol['fraction_of_upper_mean'], '.3f')} (mean); {pol['gflops']:.3f} GFLOPs"]
    ad, up = r["adaptive"], r["upper"]
    if ad["status"] == "ok":
        a, u = ad["latency_ms"], up["latency_ms"]
        lines += [f"end to end on {r['clips']}", f"{'':>9} {'GFLOPs':>8} {'mean ms':>9} {'p50 ms':>9} {'p95 ms':>9} {'acc':>6}",
                  f"{'Upper':>9} {up['gflops']:>8.3f} {u['mean']:>9.2f} {u['p50']:>9.2f} {u['p95']:>9.2f} "
                  f"{_f(up['accuracy'], '.3f'):>6}",
                  f"{'adaptive':>9} {ad['gflops']:>8.3f} {a['mean']:>9.2f} {a['p50']:>9.2f} {a['p95']:>9.2f} "
                  f"{_f(ad['accuracy'], '.3f'):>6}"
                  + (f"  (frame cap: at most {ad['cap']:g}x Upper's {ad.get('cap_basis') or 'GFLOPs'} a clip)"
                     if ad.get("cap") else ""),
                  f"adaptive against Upper: latency {saving_phrase(ad['latency_saving'])}, GFLOPs "
                  f"{saving_phrase(ad['gflops_saving'])} (efficiency {_efficiency(ad['saving_efficiency'])}); "
                  f"mean frames {ad['mean_frames']:.2f}, mean 3D stages {ad['mean_3d_stages']:.2f}; adaptive parts ms "
                  + ", ".join(f"{k} {v:.2f}" for k, v in ad["parts_ms"].items())]
    else:
        lines.append(f"adaptive end to end: {ad['status']}")
    mem = r.get("memory_mb")
    if mem:
        unit = mem.get("unit", "RSS")
        uss = (f"; USS all {_f(mem.get('all_engines_uss'), '.0f')}, Upper {_f(mem.get('upper_only_uss'), '.0f')}"
               if mem.get("all_engines_uss") is not None else "")
        lines.append(f"memory ({unit} MiB, fresh processes{'' if unit == 'PSS' else ', no smaps_rollup'}): "
                     f"all configurations {_f(mem['all_engines'], '.0f')} "
                     f"(+{_f(mem['all_engines_loaded'], '.0f')} loaded), Upper alone {_f(mem['upper_only'], '.0f')} "
                     f"(+{_f(mem['upper_only_loaded'], '.0f')}), ratio {_f(mem['ratio'])}{uss}")
    for name, tg in r["targets"].items():
        verdict = "n/a" if tg["met"] is None else ("met" if tg["met"] else "MISSED")
        value = "n/a" if tg["value"] is None else format(tg["value"], ".3f")
        lines.append(f"target {name}: {value} ({tg['target']}) {verdict}")
    return "\n".join(lines)


def write_json(r: Any, path: str | os.PathLike) -> Path:
    """Write a result (``to_json``) or plain JSON data as indented JSON (parent folders created)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(_json(r), indent=2) + "\n", encoding="utf-8")
    return path


def plot(result: ResultLike, path: str | os.PathLike, batch: int = 1) -> Path:
    """PNG of p50 latency vs GFLOPs per configuration at ``batch``, Upper and the adaptive mean marked."""
    r = _plain(result)
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [c for c in r["configs"] if c["batch"] == batch and c["latency_ms"]]
    fig, ax = plt.subplots(figsize=(7, 5))
    for mask in sorted({c["mask"] for c in rows}):
        pts = sorted((c["gflops"], c["latency_ms"]["p50"]) for c in rows if c["mask"] == mask)
        ax.plot(*zip(*pts), marker="o", ms=4, lw=1, label=f"mask {mask}")
    up = next((c for c in rows if c["mask"] == r["upper_mask"] and c["frames"] == r["num_frames"]), None)
    if up:
        ax.scatter([up["gflops"]], [up["latency_ms"]["p50"]], s=150, marker="*", c="k", zorder=5, label="Upper (engine)")
    ad, u = r["adaptive"], r["upper"]
    if ad["status"] == "ok":
        ax.scatter([u["gflops"]], [u["latency_ms"]["mean"]], s=90, marker="s", facecolors="none", edgecolors="k",
                   zorder=5, label="Upper end to end (mean)")
        ax.scatter([ad["gflops"]], [ad["latency_ms"]["mean"]], s=110, marker="D", c="red", zorder=6,
                   label="adaptive end to end (mean)")
    ax.set_xlabel("GFLOPs per clip (backbone; end to end adds the selection net)")
    ax.set_ylabel(f"latency ms (p50, batch {batch})")
    ax.set_title(f"{r['arch']}: latency vs GFLOPs ({r['machine'].get('backend', '')}, "
                 f"{r['machine'].get('threads')} threads)", fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path
