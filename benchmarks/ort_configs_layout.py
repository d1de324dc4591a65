"""The ``configs`` layout against the one ``If`` graph at full size (issue 13): memory and latency.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/ort_configs_layout.py [--arch slow_r50] [--fold measure] [--rounds 4]

Exports a random-init bundle (224, T=8; ``bundle_memory.export_full_bundle``, which writes the flat
graph per configuration as ``ada3d export`` does), then measures what ``ada3d export --ort-layout
measure`` decides from, without its shortcuts: the estimate of the flat graphs' private 2D weights,
PSS of fresh processes (Upper alone and every configuration, each layout; ``runtime.bench.measure_memory``),
and every configuration at T' in {1, T/2, T} in both layouts, round-robin in one process
(``fold_choice.time_graphs``, thread CPU time). Then applies the exporter's rule (``layout_measure``).
Writes benchmarks/results/ort_configs_layout_<arch>.{md,json}. Latency only: random weights.
"""
from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

from _common import RESULTS, command_line, machine_lines

from ada3d_edge.runtime.bench_report import machine_info


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--arch", default="slow_r50")
    ap.add_argument("--fold", default="measure")
    ap.add_argument("--rounds", type=int, default=4)
    ap.add_argument("--work", default="/tmp/ada3d_configs_layout")
    ap.add_argument("--estimate-only", action="store_true",
                    help="Stop where the exporter does when the estimate cannot fit: the estimate and the one "
                         "graph's Upper-alone PSS only (i3d_r50's 32 flat graphs are not loaded)")
    args = ap.parse_args()

    from bundle_memory import export_full_bundle

    from ada3d_edge.bundle import open_bundle
    from ada3d_edge.export import layout_measure as lm
    from ada3d_edge.export.fold_choice import time_graphs
    from ada3d_edge.runtime.backends.ort import OrtBackend

    out = Path(args.work) / args.arch
    t0 = time.time()
    export = export_full_bundle(args.arch, out, calibrated=False, fold=args.fold)
    export_s = time.time() - t0
    b = open_bundle(out)
    m = b.manifest
    flat = {c.mask: out / c.file for c in m.backbone.config_graphs}
    res = {"arch": args.arch, "fold": args.fold, "modes": m.layout_choice.get("modes"), "export_s": export_s,
           "export": export, "estimate_mib": lm.flat_private_mib(flat),
           "disk_mib": {"graph": (out / m.backbone.file).stat().st_size / 2 ** 20,
                        "weights": (out / m.backbone.weights.file).stat().st_size / 2 ** 20,
                        "config_graphs": sum(p.stat().st_size for p in flat.values()) / 2 ** 20}}
    if args.estimate_only:
        upper_pss = lm._pss(out, "graph", "upper", 1800)
        room = (lm.MEMORY_BUDGET - 1) * upper_pss
        res.update({"pss_mib": {"graph_upper": upper_pss}, "room_mib": room,
                    "choice": "graph" if res["estimate_mib"] > room else "measure further"})
        info = machine_info(OrtBackend(intra_op_threads=1), 1)
        cmd = command_line()
        res.update({"command": cmd, "machine": info})
        name = RESULTS / f"ort_configs_layout_{args.arch}_estimate"
        name.with_suffix(".json").write_text(json.dumps(res, indent=2, default=str) + "\n")
        lines = [f"# ONNX Runtime layouts at full size, the exporter's first step ({args.arch})", "",
                 f"Command: `{cmd}`", "", *machine_lines(info),
                 f"- random-init `{args.arch}` @224, T=8, `--fold {args.fold}`; export {export_s:.0f} s; "
                 f"{len(flat)} flat graphs, {res['disk_mib']['config_graphs']:.2f} MiB on disk beside "
                 f"{res['disk_mib']['weights']:.1f} MiB of weights", "",
                 f"- estimated private 2D weights of the flat graphs: {res['estimate_mib']:.1f} MiB",
                 f"- PSS of the one graph running Upper alone (fresh process): {upper_pss:.1f} MiB; room within "
                 f"{lm.MEMORY_BUDGET}x: {room:.1f} MiB",
                 f"- the exporter's decision at this step: **{res['choice']}**"]
        name.with_suffix(".md").write_text("\n".join(lines) + "\n")
        print("\n".join(lines))
        return
    pss = {}
    for layout in ("graph", "configs"):
        for which in ("upper", "all"):
            pss[f"{layout}_{which}"] = lm._pss(out, layout, which, 1800)
            print(layout, which, f"{pss[f'{layout}_{which}']:.1f} MiB", flush=True)
    res["pss_mib"] = pss
    res["memory_ratio"] = pss["configs_all"] / pss["graph_upper"]
    budget_s = 1e9  # rounds, not time, bound the run
    ms, frames, rounds = time_graphs({"graph": out / m.backbone.file, "configs": flat}, m.num_stages, m.num_frames,
                                     m.crop_size, 1, budget_s, min_rounds=args.rounds, max_rounds=args.rounds,
                                     progress=True, desc="graph vs configs")
    res.update({"ms": ms, "frames": frames, "rounds": rounds})
    ratios = {mask: [c / g for c, g in zip(ms["configs"][mask], ms["graph"][mask])] for mask in ms["graph"]}
    res["speed_ratio"] = statistics.fmean(r for v in ratios.values() for r in v)
    upper = ms["graph"][b.upper_mask]
    res["vs_upper"] = {lay: {mask: [x / u for x, u in zip(v, upper)] for mask, v in ms[lay].items()} for lay in ms}
    fits = res["memory_ratio"] <= lm.MEMORY_BUDGET and res["estimate_mib"] <= (lm.MEMORY_BUDGET - 1) * pss["graph_upper"]
    res["choice"] = "configs" if fits and res["speed_ratio"] < lm.FASTER_BY else "graph"
    info = machine_info(OrtBackend(intra_op_threads=1), 1)
    cmd = command_line()
    res.update({"command": cmd, "machine": info})
    name = RESULTS / f"ort_configs_layout_{args.arch}"
    name.with_suffix(".json").write_text(json.dumps(res, indent=2) + "\n")
    lines = [f"# ONNX Runtime layouts at full size: the one If graph vs a flat graph per configuration ({args.arch})", "",
             f"Command: `{cmd}`", "", *machine_lines(info),
             f"- random-init `{args.arch}` @224, T=8, `--fold {args.fold}` (modes {res['modes']}); export {export_s:.0f} s",
             f"- disk: one graph {res['disk_mib']['graph']:.2f} MiB, weights {res['disk_mib']['weights']:.1f} MiB, "
             f"all flat graphs {res['disk_mib']['config_graphs']:.2f} MiB (they point into the same weights file)",
             f"- latency: thread CPU time, {rounds} round-robin rounds after a warm-up round, medians", "",
             "| | PSS MiB, Upper alone | PSS MiB, all configurations (+ selection net) | all / one graph's Upper |",
             "|---|---|---|---|",
             f"| one If graph | {pss['graph_upper']:.1f} | {pss['graph_all']:.1f} | {pss['graph_all'] / pss['graph_upper']:.2f} |",
             f"| flat graph per configuration | {pss['configs_upper']:.1f} | {pss['configs_all']:.1f} | "
             f"{res['memory_ratio']:.2f} |", "",
             f"Estimated private 2D weights of the flat graphs: {res['estimate_mib']:.1f} MiB "
             f"(the exporter skips the probe above {(lm.MEMORY_BUDGET - 1) * pss['graph_upper']:.0f} MiB here).", "",
             "| mask | T' | one graph ms | flat ms | flat / graph | graph / Upper | flat / Upper |", "|---|---|---|---|---|---|---|"]
    for mask in ms["graph"]:
        for i, t in enumerate(frames):
            g, c = ms["graph"][mask][i], ms["configs"][mask][i]
            lines.append(f"| {mask} | {t} | {g:.1f} | {c:.1f} | {c / g:.3f} | {g / upper[i]:.3f} | {c / upper[i]:.3f} |")
    lines += ["", f"Mean flat / graph: {res['speed_ratio']:.3f}. The exporter's rule (PSS <= {lm.MEMORY_BUDGET}x, "
              f"faster by {lm.FASTER_BY}): **{res['choice']}**."]
    name.with_suffix(".md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
