"""FLOPs table vs the paper's Upper figures -> benchmarks/results/flops.md.

Every number in the "ours" column comes from `ada3d_edge.flops`; only the "paper" column is typed
in, from the Ada3D paper (reference/ada3d-paper.txt): Table 1 (I3D R50, Upper 58.6 GFLOPs at 8
frames, 117.3 at 16) and Table 4 (SlowOnly R50 on FCVID, Upper 54.5 at 8 frames, 109.1 at 16).

    .venv/bin/python benchmarks/flops_table.py
"""
from __future__ import annotations

import datetime as dt

from _common import RESULTS, command_line

from ada3d_edge.flops import backbone_macs, selection_macs
from ada3d_edge.models.specs import SelectionSpec, get_spec

# (arch, frames, crop, mask or None = Upper, paper GFLOPs or None, where the paper gives it)
ROWS = [
    ("slow_r50", 8, 256, None, 54.5, "Table 4, 8-frame Upper"),
    ("slow_r50", 16, 256, None, 109.1, "Table 4, 16-frame Upper"),
    ("i3d_r50", 8, 256, None, 58.6, "Table 1, 8-frame Upper"),
    ("i3d_r50", 16, 256, None, 117.3, "Table 1, 16-frame Upper"),
    ("slow_r50", 8, 224, None, None, "-"),
    ("slow_r50", 8, 224, "00", None, "-"),
    ("i3d_r50", 8, 224, None, None, "-"),
    ("i3d_r50", 8, 224, "00000", None, "-"),
]


def main() -> None:
    lines = ["# GFLOPs (multiply-accumulates of conv + fc, as the paper and PySlowFast count them)", "",
             f"Command: `{command_line()}`  ", f"Generated {dt.datetime.now(dt.timezone.utc).isoformat(timespec='seconds')} "
             "from `ada3d_edge.flops` (analytic, machine-independent). The paper column is quoted from "
             "reference/ada3d-paper.txt.", "",
             "| arch | frames | crop | stage mask (1 = 3D) | ours GFLOPs | paper GFLOPs | diff | paper source |",
             "|---|---|---|---|---|---|---|---|"]
    for arch, t, crop, mask, paper, src in ROWS:
        spec = get_spec(arch)
        m = mask or "1" * spec.num_stages_3d
        ours = backbone_macs(spec, m, t, crop) / 1e9
        diff = f"{ours - paper:+.2f}" if paper is not None else "-"
        lines.append(f"| {arch} | {t} | {crop} | {m}{' (Upper)' if mask is None else ' (all 2D)'} | {ours:.2f} | "
                     f"{paper if paper is not None else '-'} | {diff} | {src} |")
    lines += ["", "Per-stage breakdown, slow_r50 Upper, 8 frames @224 (GFLOPs):", ""]
    parts = backbone_macs(get_spec("slow_r50"), None, 8, 224, breakdown=True)
    lines += ["| " + " | ".join(parts) + " |", "|" + "---|" * len(parts),
              "| " + " | ".join(f"{v / 1e9:.2f}" for v in parts.values()) + " |", ""]
    sel = selection_macs(SelectionSpec(), frames=8, num_stages=2, num_frames_out=8) / 1e9
    lines.append(f"Selection network (MobileNetV2 x1.0 @112, 8 frames, both heads): {sel:.3f} GFLOPs.")
    out = RESULTS / "flops.md"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text("\n".join(lines) + "\n", encoding="utf-8")
    print("\n".join(lines))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
