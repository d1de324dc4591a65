"""Shared-weight backbone layouts against today's one-graph-per-configuration bundle (issue 13).

Random-init `slow_r50` (K = 2) and `i3d_r50` (K = 5) at 224x224, T = 8, ONNX Runtime CPU:
- today: one `backbone_<mask>.onnx` per configuration (`onnx_export.export_backbone`);
- A (`shared`): one graph, an `If` per varying segment (`export/shared_graph.py`);
- B (`segments`): one session per segment variant, chained at run time, weights shared through the
  memory-mapped weights file, or (`segments_addinit`) as `OrtValue`s (`SessionOptions.add_initializer`).
A layout is timed or probed at `layout@level[+nopattern][+envalloc]` (see `_options`). Each subcommand
adds its section to benchmarks/results/shared_weights_layout_cpu.json; `report` writes the .md.
Memory: PSS/USS from /proc/self/smaps_rollup of a fresh process per measurement that loads the
sessions and runs every configuration once at T' = 8 and 1 (without importing torch). Latency:
round-robin in one process, shuffled each round, medians of wall clock and of the calling thread's
CPU time (intra-op threads 1); quote ratios.

The runs behind the committed results (export, then):

    nice -n 10 env OMP_NUM_THREADS=1 .venv/bin/python benchmarks/shared_weights_layout.py export
    ... memory --arch slow_r50 --layouts today,shared --levels all,extended,all+nopattern,extended+nopattern
    ... latency --arch slow_r50 --variants today@all,shared@all+nopattern,segments@all+nopattern+envalloc
    .venv/bin/python benchmarks/shared_weights_layout.py report
(the exact list is in the results file, one command line per merged run).
"""
from __future__ import annotations

import argparse
import json
import random
import statistics
import subprocess
import sys
import time
from pathlib import Path

from _common import RESULTS, command_line, machine_lines

from ada3d_edge.models.specs import all_masks

CROP, T = 224, 8
ARCHS = {"slow_r50": 2, "i3d_r50": 5}
LATENCY_MASKS = {"slow_r50": ("11", "10", "01", "00"), "i3d_r50": ("11111", "01010", "00000")}
I3D_TODAY_SUBSET = ("11111", "01010", "00000", "10101")  # today's layout for i3d: exported and loaded in part
LEVELS = {"all": "ORT_ENABLE_ALL", "extended": "ORT_ENABLE_EXTENDED"}
OUT = RESULTS / "shared_weights_layout_cpu"


def _load() -> dict:
    return json.loads(OUT.with_suffix(".json").read_text()) if OUT.with_suffix(".json").is_file() else {}


def _save(section: str, value: dict) -> None:
    from ada3d_edge.runtime.bench_report import machine_info

    res = _load()
    cmd = command_line()
    earlier = res.get(section, {}).get("commands") or []
    value = {**value, "command": cmd, "commands": earlier + [cmd] if section != "export" else [cmd],
             "machine": machine_info(None, 1)}
    res[section] = value
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.with_suffix(".json").write_text(json.dumps(res, indent=1, sort_keys=True) + "\n")
    print(json.dumps(value, indent=1)[:3000], flush=True)


# ---------------------------------------------------------------- export

def _backbone(arch: str):
    import torch

    from ada3d_edge.models import build_backbone

    torch.manual_seed(0)
    b = build_backbone(arch, num_classes=400, crop_size=CROP, num_frames=T).eval()
    with torch.no_grad():  # trained-looking BN statistics, so folding is not a no-op
        for m in b.modules():
            if isinstance(m, torch.nn.BatchNorm3d):
                m.running_mean.normal_(0, 0.1)
                m.running_var.uniform_(0.5, 2.0)
                m.weight.normal_(1.0, 0.1)
                m.bias.normal_(0.0, 0.1)
    return b


def cmd_export(args) -> None:
    import onnx

    from ada3d_edge.export.onnx_export import export_backbone
    from ada3d_edge.export.shared_graph import build_shared_backbone, initializer_bytes, save_backbone_files

    work = Path(args.work)
    out = {}
    for arch, k in ARCHS.items():
        if arch not in args.arch:
            continue
        b = _backbone(arch)
        d = work / arch
        d.mkdir(parents=True, exist_ok=True)
        masks = all_masks(k) if k <= 2 else list(I3D_TODAY_SUBSET)
        times = {}
        for mask in masks:
            t0 = time.time()
            export_backbone(b, mask, d / f"backbone_{mask}.onnx", CROP, num_frames=T)
            times[mask] = time.time() - t0
            print(f"{arch} today {mask}: {times[mask]:.1f}s", flush=True)
        t0 = time.time()
        model, segments = build_shared_backbone(b, CROP, num_frames=T)
        bundle = d / "bundle"
        info = save_backbone_files(model, segments, bundle)  # the If graph + segment files, one weights file
        shared_s = time.time() - t0
        (bundle / "plan.json").write_text(json.dumps(info))
        print(f"{arch} shared: {shared_s:.1f}s", flush=True)
        upper = d / f"backbone_{'1' * k}.onnx"
        today_sizes = [(d / f"backbone_{m}.onnx").stat().st_size for m in masks]
        n = 2 ** k
        out[arch] = {
            "today_export_s": times, "today_export_all_s": sum(times.values()) / len(times) * n,
            "today_export_all_extrapolated": len(masks) < n, "shared_export_s": shared_s,
            "upper_file_bytes": upper.stat().st_size,
            "today_bundle_bytes": int(sum(today_sizes) / len(today_sizes) * n),
            "today_bundle_extrapolated": len(masks) < n,
            "shared_file_bytes": (bundle / info["graph"]).stat().st_size + (bundle / info["weights"]).stat().st_size,
            "shared_graph_bytes": (bundle / info["graph"]).stat().st_size,
            "weights_file_bytes": (bundle / info["weights"]).stat().st_size,
            "segments_graph_bytes": sum((bundle / f).stat().st_size for s in info["segments"] for f in s["files"]),
            "upper_initializer_bytes": initializer_bytes(onnx.load(str(upper))),
            "shared_initializer_bytes": initializer_bytes(model),
            "variants": {s.name: len(s.variants) for s in segments},
        }
    _save("export", {"archs": out})


# ---------------------------------------------------------------- sessions

_ENV_ALLOCATOR = []


def _options(level: str, threads: int = 1):
    """SessionOptions for ``level``: ``all`` or ``extended``, plus ``+nopattern`` (no memory pattern:
    one pre-planned activation block per input shape and subgraph otherwise) and ``+envalloc`` (one
    CPU arena shared by every session of the process)."""
    import onnxruntime as ort

    name, *flags = level.split("+")
    o = ort.SessionOptions()
    o.graph_optimization_level = getattr(ort.GraphOptimizationLevel, LEVELS[name])
    o.intra_op_num_threads = threads
    o.inter_op_num_threads = 1
    if "nopattern" in flags:
        o.enable_mem_pattern = False
    if "envalloc" in flags:
        if not _ENV_ALLOCATOR:
            info = ort.OrtMemoryInfo("Cpu", ort.OrtAllocatorType.ORT_ARENA_ALLOCATOR, 0, ort.OrtMemType.DEFAULT)
            ort.create_and_register_allocator(info, ort.OrtArenaCfg(0, -1, -1, -1))
            _ENV_ALLOCATOR.append(info)
        o.add_session_config_entry("session.use_env_allocators", "1")
    return o


class Today:
    """Today's layout: one session per configuration file."""

    def __init__(self, d: Path, masks, level: str):
        import onnxruntime as ort

        self.s = {m: ort.InferenceSession(str(d / f"backbone_{m}.onnx"), _options(level),
                                          providers=["CPUExecutionProvider"]) for m in masks}

    def run(self, mask, x):
        return self.s[mask].run(["logits"], {"clip": x})[0]


class Shared:
    """Layout A: one session, the mask is an input."""

    def __init__(self, d: Path, level: str):
        import numpy as np
        import onnxruntime as ort

        self.s = ort.InferenceSession(str(d / "bundle" / "backbone_shared.onnx"), _options(level),
                                      providers=["CPUExecutionProvider"])
        self.masks = {}  # no ada3d_edge.export import here: it pulls in torch, which the runtime never loads
        self.np = np

    def run(self, mask, x):
        m = self.masks.setdefault(mask, self.np.asarray([int(c) for c in mask], self.np.int64))
        return self.s.run(["logits"], {"clip": x, "stage_mask": m})[0]


class Segments:
    """Layout B: one session per segment variant, chained on the host.

    ``addinit=False``: every file points into one page-aligned ``segments.weights`` (ORT maps it);
    ``addinit=True``: the weights are read once into memory and given to every session as
    ``OrtValue``s (``SessionOptions.add_initializer``), views where a shape differs.
    """

    def __init__(self, d: Path, level: str, addinit: bool = False):
        import numpy as np
        import onnx
        import onnxruntime as ort

        seg_dir = d / "bundle"
        plan = json.loads((seg_dir / "plan.json").read_text())
        blob = np.fromfile(seg_dir / plan["weights"], np.uint8) if addinit else None
        self.keep = []  # arrays and OrtValues must outlive the sessions
        self.plan = []
        for seg in plan["segments"]:
            sessions = []
            for f in seg["files"]:
                o = _options(level)
                if addinit:
                    model = onnx.load(str(seg_dir / f), load_external_data=False)
                    for init in model.graph.initializer:
                        if init.data_location != init.EXTERNAL:
                            continue
                        info = {e.key: e.value for e in init.external_data}
                        off, n = int(info["offset"]), int(info["length"])
                        arr = blob[off:off + n].view(np.float32).reshape(tuple(init.dims))
                        val = ort.OrtValue.ortvalue_from_numpy(arr)
                        self.keep += [arr, val]
                        o.add_initializer(init.name, val)
                sessions.append(ort.InferenceSession(str(seg_dir / f), o, providers=["CPUExecutionProvider"]))
            self.plan.append((seg["choice"], sessions))
        self.blob = blob

    def run(self, mask, x):
        idx = int(mask, 2)
        for choice, sessions in self.plan:
            x = sessions[choice[idx]].run(["y"], {"x": x})[0]
        return x


def open_layout(arch: str, layout: str, level: str, work: Path, masks=None):
    d = work / arch
    if layout == "today":
        return Today(d, masks, level)
    if layout == "shared":
        return Shared(d, level)
    if layout in ("segments", "segments_addinit"):
        return Segments(d, level, addinit=layout == "segments_addinit")
    raise ValueError(layout)


# ---------------------------------------------------------------- memory

def smaps_rollup() -> dict:
    out = {}
    with open("/proc/self/smaps_rollup", encoding="ascii") as f:
        for line in f:
            key, _, rest = line.partition(":")
            if rest.strip().endswith("kB"):
                out[key.strip()] = int(rest.split()[0]) / 1024.0
    return {"rss_mib": out["Rss"], "pss_mib": out["Pss"],
            "uss_mib": out.get("Private_Clean", 0) + out.get("Private_Dirty", 0)}


def probe(arch: str, layout: str, level: str, work: Path, masks, frames=(T, 1)) -> dict:
    """In this (fresh) process: load, run each configuration at each of ``frames``, read smaps_rollup."""
    import numpy as np

    import onnxruntime  # noqa: F401  (the baseline includes the library)

    base = smaps_rollup()
    if "torch" in sys.modules:
        raise RuntimeError("the memory probe must not import torch")
    t0 = time.time()
    lay = open_layout(arch, layout, level, work, masks)
    load_s = time.time() - t0
    for f in frames:
        x = np.zeros((1, 3, f, CROP, CROP), np.float32)
        for m in masks:
            lay.run(m, x)
    return {"baseline": base, "loaded": smaps_rollup(), "load_s": load_s, "configs_run": len(masks),
            "frames": list(frames)}


def _probe_subprocess(arch, layout, level, work, masks, frames) -> dict:
    cmd = [sys.executable, __file__, "probe", "--arch", arch, "--layout", layout, "--level", level,
           "--work", str(work), "--masks", ",".join(masks), "--warm-frames", ",".join(map(str, frames))]
    r = subprocess.run(cmd, capture_output=True, text=True)
    if r.returncode:
        raise RuntimeError(r.stderr[-3000:])
    return json.loads(r.stdout.strip().splitlines()[-1])


def cmd_memory(args) -> None:
    work = Path(args.work)
    res = _load().get("memory", {}).get("archs", {})
    for arch in args.arch:
        k = ARCHS[arch]
        upper = "1" * k
        masks = all_masks(k)
        today_masks = masks if k <= 2 else list(I3D_TODAY_SUBSET)
        rows = res.get(arch, {}).get("rows", {})  # rows of earlier runs are kept (one run per level set)
        for level in args.levels:
            runs = [("today_upper", "today", [upper]), (f"today_{len(today_masks)}", "today", today_masks),
                    ("shared_all", "shared", masks), ("segments_all", "segments", masks),
                    ("segments_addinit_all", "segments_addinit", masks)]
            for label, layout, ms in runs:
                if layout not in args.layouts:
                    continue
                t0 = time.time()
                if args.warm_frames != [T, 1]:  # rows warmed otherwise are told apart by a suffix
                    label = f"{label}[T'={','.join(map(str, args.warm_frames))}]"
                rows[f"{label}@{level}"] = r = _probe_subprocess(arch, layout, level, work, ms, args.warm_frames)
                print(f"{arch} {label}@{level}: PSS {r['loaded']['pss_mib']:.0f} MiB USS {r['loaded']['uss_mib']:.0f} "
                      f"({time.time() - t0:.0f}s)", flush=True)
        res[arch] = {"rows": rows, "today_masks": today_masks}
    _save("memory", {"archs": res})


# ---------------------------------------------------------------- latency

def cmd_latency(args) -> None:
    import numpy as np

    work = Path(args.work)
    res = _load().get(args.section, {}).get("archs", {})
    for arch in args.arch:
        masks = LATENCY_MASKS[arch]
        layouts = {}
        for spec in args.variants:
            layout, level = spec.split("@")
            layouts[spec] = open_layout(arch, layout, level, work, masks)
        rng = np.random.default_rng(0)
        xs = {f: rng.standard_normal((1, 3, f, CROP, CROP), dtype=np.float32) for f in args.frames}
        jobs = [(s, m, f) for s in layouts for m in masks for f in args.frames]
        # same output for the same input across layouts (checked once, before timing)
        ref = {(m, f): layouts[args.variants[0]].run(m, xs[f]) for m in masks for f in args.frames}
        diff = max(float(np.abs(layouts[s].run(m, xs[f]) - ref[(m, f)]).max()) for s, m, f in jobs)
        samples = {j: [] for j in jobs}
        cpu = {j: [] for j in jobs}
        order = list(jobs)
        t_start = time.time()
        for r in range(args.warmup + args.repeats):
            random.Random(r).shuffle(order)
            for j in order:
                c0, t0 = time.thread_time(), time.perf_counter()  # intra-op threads 1: ORT runs on this thread
                layouts[j[0]].run(j[1], xs[j[2]])
                if r >= args.warmup:
                    samples[j].append((time.perf_counter() - t0) * 1e3)
                    cpu[j].append((time.thread_time() - c0) * 1e3)
            print(f"{arch} round {r + 1}/{args.warmup + args.repeats} ({time.time() - t_start:.0f}s)", flush=True)
        rows = [{"layout": s, "mask": m, "frames": f, "p50_ms": statistics.median(samples[(s, m, f)]),
                 "cpu_p50_ms": statistics.median(cpu[(s, m, f)]), "samples_ms": samples[(s, m, f)],
                 "cpu_samples_ms": cpu[(s, m, f)]} for s, m, f in jobs]
        res[arch] = {"rows": rows, "max_abs_diff_between_layouts": diff, "repeats": args.repeats,
                     "warmup": args.warmup, "variants": args.variants, "wall_s": time.time() - t_start}
    _save(args.section, {"archs": res})


# ---------------------------------------------------------------- report

def _ratio_table(lat: dict, arch: str, base: str, others: list, frames, key: str = "cpu_p50_ms") -> list:
    rows = {(r["layout"], r["mask"], r["frames"]): r[key] for r in lat["rows"]}
    masks = LATENCY_MASKS[arch]
    up = "1" * ARCHS[arch]
    cols = ["mask", "T'", f"{base} ms"] + [f"{o} / {base}" for o in others] + [f"{o} / Upper {base}" for o in others]
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    for m in masks:
        for f in frames:
            b = rows[(base, m, f)]
            ub = rows[(base, up, f)]
            vals = [m, str(f), f"{b:.0f}"] + [f"{rows[(o, m, f)] / b:.3f}" for o in others] + \
                   [f"{rows[(o, m, f)] / ub:.3f}" for o in others]
            lines.append("| " + " | ".join(vals) + " |")
    return lines


def cmd_report(args) -> None:
    res = _load()
    lines = ["# Shared-weight backbone layouts, ONNX Runtime CPU (random init, 224x224, T = 8)", "",
             "Layouts: **today** = one `backbone_<mask>.onnx` per configuration; **shared** (A) = one graph, "
             "an `If` per varying segment, mask as input (`ada3d_edge/export/shared_graph.py`); **segments** "
             "(B) = one session per segment variant, chained on the host, weights shared through "
             "the memory-mapped weights file (`segments`) or `SessionOptions.add_initializer` "
             "(`segments_addinit`). `@all` / `@extended` = ORT graph optimisation level; "
             "`+nopattern` = `enable_mem_pattern=False`; `+envalloc` = one CPU arena for all sessions.", "",
             "Every command below ran as `nice -n 10 env OMP_NUM_THREADS=1 /work/main/.venv/bin/python ...` "
             "on the shared 2-core CPU (`lscpu` model name: AMD EPYC), beside ~4 other agents' jobs; the load "
             "average at the start of each run is given. Design note: docs/shared-weights.md.", ""]
    for section in ("export", "memory", *sorted(k for k in res if k.startswith("latency"))):
        if section not in res:
            continue
        s = res[section]
        cmds = s.get("commands") or [s["command"]]
        lines += [f"## {section}", "", "Command" + ("s (rows merged; machine line: the last run)" if len(cmds) > 1
                                                      else "") + ":", "", *[f"- `{c}`" for c in cmds], "",
                  *machine_lines(s["machine"]), ""]
        if section == "export":
            lines += ["| arch | Upper file MiB | today bundle MiB (2^K files) | shared file MiB | shared / Upper | "
                      "segment graphs MiB | init bytes shared / Upper | export today (2^K) s | export shared s |",
                      "|---|---|---|---|---|---|---|---|---|"]
            for arch, e in s["archs"].items():
                mib = 2 ** 20
                n_today = len(e["today_export_s"])
                extra = f" (extrapolated from {n_today})" if e["today_export_all_extrapolated"] else ""
                cells = [arch, f"{e['upper_file_bytes'] / mib:.1f}",
                         f"{e['today_bundle_bytes'] / mib:.0f}{extra if e['today_bundle_extrapolated'] else ''}",
                         f"{e['shared_file_bytes'] / mib:.1f}",
                         f"**{e['shared_file_bytes'] / e['upper_file_bytes']:.3f}**",
                         f"{e['segments_graph_bytes'] / mib:.2f}",
                         f"{e['shared_initializer_bytes'] / e['upper_initializer_bytes']:.3f}",
                         f"{e['today_export_all_s']:.0f}{extra}", f"{e['shared_export_s']:.0f}"]
                lines.append("| " + " | ".join(cells) + " |")
            lines += ["", "Segment variants per segment: " + "; ".join(
                f"{a}: {e['variants']}" for a, e in s["archs"].items()), ""]
        if section == "memory":
            for arch, m in s["archs"].items():
                ref = m["rows"].get("today_upper@all")  # Upper alone as the runtime opens it today
                lines += [f"### {arch}", "", "| what (fresh process) | PSS MiB | USS MiB | RSS MiB | PSS / Upper "
                          "today@all | PSS / Upper same level | baseline PSS | load s |",
                          "|---|---|---|---|---|---|---|---|"]
                for label, r in m["rows"].items():
                    level = label.split("@")[1]
                    tag = label[label.index("["):label.index("]") + 1] if "[" in label else ""
                    pss = r["loaded"]["pss_mib"]
                    same = m["rows"].get(f"today_upper{tag}@{level}")
                    cells = [label, f"{pss:.0f}", f"{r['loaded']['uss_mib']:.0f}", f"{r['loaded']['rss_mib']:.0f}",
                             f"**{pss / ref['loaded']['pss_mib']:.3f}**" if ref else "-",
                             f"{pss / same['loaded']['pss_mib']:.3f}" if same else "-",
                             f"{r['baseline']['pss_mib']:.0f}", f"{r['load_s']:.1f}"]
                    lines.append("| " + " | ".join(cells) + " |")
                n = len(m["today_masks"])
                k = ARCHS[arch]
                if n < 2 ** k:
                    for level in sorted({lab.split("@")[1] for lab in m["rows"]}):
                        up, sub = m["rows"].get(f"today_upper@{level}"), m["rows"].get(f"today_{n}@{level}")
                        if up and sub:
                            per = (sub["loaded"]["pss_mib"] - up["loaded"]["pss_mib"]) / (n - 1)
                            est = up["loaded"]["pss_mib"] + per * (2 ** k - 1)
                            lines.append(f"\ntoday's layout, all {2 ** k} @{level}: **about {est:.0f} MiB "
                                         f"({est / up['loaded']['pss_mib']:.1f}x Upper)**, extrapolated from {n} "
                                         f"loaded ({per:.0f} MiB per extra configuration); not measured.")
                lines.append("")
        if section.startswith("latency"):
            for arch, lat in s["archs"].items():
                base = "today@all"
                others = [v for v in lat["variants"] if v != base]
                frames = sorted({r["frames"] for r in lat["rows"]}, reverse=True)
                lines += [f"### {arch}", "", f"{lat['warmup']} warm-up + {lat['repeats']} timed rounds, shuffled; "
                          f"batch 1, intra-op threads 1; max |difference| of the logits between layouts "
                          f"{lat['max_abs_diff_between_layouts']:.2g}; wall {lat['wall_s']:.0f} s.", "",
                          "CPU time of the calling thread (ORT runs every op there with intra-op threads 1), "
                          "medians: waiting for a core under load is not counted.", "",
                          *_ratio_table(lat, arch, base, others, frames), "",
                          "Wall-clock medians (the same runs; noisy under load):", "",
                          *_ratio_table(lat, arch, base, others, frames, "p50_ms"), ""]
    OUT.with_suffix(".md").write_text("\n".join(lines) + "\n", encoding="utf-8")
    print(OUT.with_suffix(".md").read_text())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("cmd", choices=("export", "memory", "latency", "report", "probe"))
    ap.add_argument("--work", default="/tmp/ada3d_shared", help="where the ONNX files go (large)")
    ap.add_argument("--arch", default="slow_r50,i3d_r50")
    ap.add_argument("--levels", default="all,extended,all+nopattern,extended+nopattern",
                    help="ORT level [+nopattern][+envalloc] per memory row")
    ap.add_argument("--layouts", default="today,shared,segments,segments_addinit")
    ap.add_argument("--variants", default="today@all,today@extended,shared@all,shared@extended,segments@extended",
                    help="layout@level pairs timed round-robin (the first is the reference for the diff check)")
    ap.add_argument("--frames", default="8,4,1", help="T' values timed by latency")
    ap.add_argument("--warm-frames", default="8,1", help="T' values the memory probe runs every configuration at")
    ap.add_argument("--section", default="latency", help="results key of a latency run (latency, latency_*)")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--warmup", type=int, default=1)
    ap.add_argument("--layout", help=argparse.SUPPRESS)
    ap.add_argument("--level", help=argparse.SUPPRESS)
    ap.add_argument("--masks", help=argparse.SUPPRESS)
    args = ap.parse_args()
    args.arch = args.arch.split(",")
    args.levels = args.levels.split(",")
    args.layouts = args.layouts.split(",")
    args.variants = args.variants.split(",")
    args.frames = [int(f) for f in args.frames.split(",")]
    args.warm_frames = [int(f) for f in args.warm_frames.split(",")]
    if args.cmd == "probe":
        print(json.dumps(probe(args.arch[0], args.layout, args.level, Path(args.work), args.masks.split(","),
                               args.warm_frames)))
        return
    {"export": cmd_export, "memory": cmd_memory, "latency": cmd_latency, "report": cmd_report}[args.cmd](args)


if __name__ == "__main__":
    main()
