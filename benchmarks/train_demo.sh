#!/usr/bin/env bash
# Acceptance benchmark of the training stages on this machine (CPU): synthetic static/motion data,
# train/demo.yaml, upper -> policy -> joint (timed), Random FT, then `ada3d eval` on val for the
# stage-1 model and the joint model. Writes benchmarks/results/train_demo.md from the eval JSON files
# (no number is typed by hand).
#
#   benchmarks/train_demo.sh            # WORK=runs/demo, PY=.venv/bin/python, OMP_NUM_THREADS=1
#   SKIP_TRAIN=1 benchmarks/train_demo.sh   # evaluate and report the checkpoints already in WORK
#   STAGES="policy joint random-ft" benchmarks/train_demo.sh   # retrain from the existing upper/final.pt
#   TRAINED_BY="ada3d demo --workdir runs/demo" WORK=runs/demo/train STAGES=random-ft benchmarks/train_demo.sh
#       # report on the stages `ada3d demo` trained (its times_train.txt), adding Random FT and the evals
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
WORK=${WORK:-runs/demo}
RECIPE=${RECIPE:-train/demo.yaml}
OUT_MD=${OUT_MD:-benchmarks/results/train_demo.md}
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}
ADA3D=("$PY" -m ada3d_edge.cli)
SETS=(--set "output_dir=$WORK" --set "data.root=$WORK/data")
SYNTH_ARGS=(--classes 8 --videos-per-class 200 --val-per-class 25 --size 64 --frames 40 --seed 0)

mkdir -p "$WORK" "$(dirname "$OUT_MD")"
LOAD_START=$(cut -d' ' -f1-3 /proc/loadavg)
if [ ! -f "$WORK/data/val.txt" ]; then
  "${ADA3D[@]}" synth "$WORK/data" "${SYNTH_ARGS[@]}" --quiet --overwrite
fi

if [ "${SKIP_TRAIN:-0}" != 1 ]; then
  touch "$WORK/times_train.txt"
  for stage in ${STAGES:-upper policy joint random-ft}; do   # STAGES="policy joint random-ft": keep upper
    t0=$(date +%s)
    "${ADA3D[@]}" train "$stage" "$RECIPE" "${SETS[@]}" --quiet --overwrite  # it retrains the stages named
    grep -v "^$stage " "$WORK/times_train.txt" > "$WORK/times_train.tmp" || true
    echo "$stage $(( $(date +%s) - t0 ))" >> "$WORK/times_train.tmp"
    mv "$WORK/times_train.tmp" "$WORK/times_train.txt"
  done
fi

t0=$(date +%s)
"${ADA3D[@]}" eval "$WORK/joint/final.pt" --data "$WORK/data/val.txt" --upper "$WORK/upper/final.pt" \
  --random-ft "$WORK/random_ft/final.pt" --json "$WORK/eval_joint.json" --quiet
"${ADA3D[@]}" eval "$WORK/policy/final.pt" --data "$WORK/data/val.txt" --upper "$WORK/upper/final.pt" \
  --json "$WORK/eval_policy.json" --quiet
echo "eval $(( $(date +%s) - t0 ))" > "$WORK/times_eval.txt"

"$PY" - "$WORK" "$RECIPE" "$OUT_MD" "$LOAD_START" "${SYNTH_ARGS[*]}" "${TRAINED_BY:-}" <<'EOF'
import json, os, platform, sys
from pathlib import Path

import torch

work, recipe, out_md, load, synth = Path(sys.argv[1]), sys.argv[2], Path(sys.argv[3]), sys.argv[4], sys.argv[5]
trained_by = sys.argv[6]
joint = json.loads((work / "eval_joint.json").read_text())
policy = json.loads((work / "eval_policy.json").read_text())
times = dict(line.split() for f in ("times_train.txt", "times_eval.txt")
             for line in (work / f).read_text().splitlines())
rows = {r["method"]: r for r in joint["rows"]}
up, ada, rnd, rft = rows["Upper"], rows["Ada3D"], rows["Random"], rows.get("Random FT")
stage1 = next(r for r in policy["rows"] if r["method"] == "Ada3D")
kinds = joint["by_kind"]
train_s = sum(int(times[s]) for s in ("upper", "policy", "joint"))
saving = 1 - ada["gflops"] / up["gflops"]
cpu = next((l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name")), platform.processor())
ncpu = os.cpu_count()
load_end = " ".join(open("/proc/loadavg").read().split()[:3])

def yes(ok): return "met" if ok else "NOT met"

checks = [
    (f"Ada3D within 1 point of Upper ({ada['metric']:.1f} vs {up['metric']:.1f})", ada["metric"] >= up["metric"] - 1.0),
    (f">= 30% fewer GFLOPs per clip than Upper, selection net included ({100 * saving:.1f}%)", saving >= 0.30),
    (f"Ada3D beats Random at the same mean usage ({ada['metric']:.1f} vs {rnd['metric']:.1f})", ada["metric"] > rnd["metric"]),
    (f"joint beats stage 1 alone ({ada['metric']:.1f} vs {stage1['metric']:.1f})", ada["metric"] > stage1["metric"]),
]
if {"static", "motion"} <= set(kinds):
    s, m = kinds["static"], kinds["motion"]
    checks.append((f"static classes get fewer 3D stages ({s['mean_3d']:.2f} vs {m['mean_3d']:.2f}) and frames "
                   f"({s['mean_frames']:.2f} vs {m['mean_frames']:.2f}) than motion classes",
                   s["mean_3d"] < m["mean_3d"] and s["mean_frames"] < m["mean_frames"]))
if rft:
    checks.append((f"Ada3D beats Random FT ({ada['metric']:.1f} vs {rft['metric']:.1f})", ada["metric"] > rft["metric"]))

def table(res):
    lines = ["| Method | Top-1 (%) | GFLOPs/clip | backbone | selection | # 3D | # Frame |", "|---|---|---|---|---|---|---|"]
    for r in res["rows"]:
        lines.append(f"| {r['method']} | {r['metric']:.1f} | {r['gflops']:.4f}{'*' if r['includes_selection'] else ''} | "
                     f"{r['gflops_backbone']:.4f} | {r['gflops_selection']:.4f} | {r['mean_3d']:.2f} | {r['mean_frames']:.2f} |")
    return "\n".join(lines)

kind_acc = {}
for r in joint["per_class"]:
    if r.get("kind") and "upper_top1" in r:
        kind_acc.setdefault(r["kind"], []).append(r["upper_top1"])
kind_acc = {k: sum(v) / len(v) for k, v in kind_acc.items()}
per_class = "\n".join(f"| {r['class']} | {r['kind']} | {r['mean_3d']:.2f} | {r['mean_frames']:.2f} | "
                      f"{r.get('ada3d_top1', float('nan')):.1f} | {r.get('upper_top1', float('nan')):.1f} |"
                      for r in joint["per_class"])
md = f"""# Training demo: Ada3D on synthetic static/motion videos (2-core CPU)

Written by `benchmarks/train_demo.sh` from `{work}/eval_joint.json` and `{work}/eval_policy.json`.

Machine: {cpu}, {ncpu} CPU cores, no GPU; torch {torch.__version__}; OMP_NUM_THREADS={os.environ.get("OMP_NUM_THREADS", "unset")}; shared with other
jobs (load average at start: {load}; at the end: {load_end}), so wall times are indicative.

Data: `ada3d synth {synth}` ({joint['num_videos']} validation videos, {joint['num_clips']} clips each).
Model: {joint['arch']} (K={joint['num_stages']}: {', '.join(joint['stages'])}), T={joint['num_frames']},
{joint['crop']} px; selection net MobileNetV2 x{joint['selection_width']}{', ' + str(joint['selection_depth']) + ' block(s) per group' if joint.get('selection_depth') else ''}{', first ' + str(joint['selection_groups']) + ' groups' if joint.get('selection_groups') else ''}{', ' + str(joint['selection_last_channels']) + ' last channels' if joint.get('selection_last_channels') else ''} at {joint['policy_size']} px. Recipe `{recipe}`.

Wall time: upper {times['upper']} s + policy {times['policy']} s + joint {times['joint']} s = **{train_s} s
({train_s / 60:.1f} min)**; Random FT {times['random-ft']} s; both evals {times['eval']} s.

## Table 1 (Ada3D = joint model; Upper and Random = the stage-0 model; Random FT from `random-ft`)

{table(joint)}

\\* includes the selection network. Ada3D saves {100 * saving:.1f}% GFLOPs per clip vs Upper.

Stage 1 alone (backbone frozen, before joint fine-tuning):

{table(policy)}

## Usage per class (Ada3D, joint model)

| Class | kind | # 3D | # Frame | Ada3D top-1 | Upper top-1 |
|---|---|---|---|---|---|
{per_class}

| Kind | videos | # 3D | # Frame |
|---|---|---|---|
""" + "\n".join(f"| {k} | {v['num_videos']} | {v['mean_3d']:.2f} | {v['mean_frames']:.2f} |" for k, v in kinds.items()) + f"""

## Targets

""" + "\n".join(f"- {text}: **{yes(ok)}**" for text, ok in checks) + f"""

Upper top-1 by kind: """ + ", ".join(f"{k} {v:.1f}%" for k, v in kind_acc.items()) + f""" (chance: {100 / len(joint['per_class']):.1f}%;
a motion class told from its pair by guessing: 50% of its pair).
""" + ("""Upper has not learned the motion classes well: where it fails on them, dropping frames and 3D
stages costs nothing there either, so the policy has little reason to spend more on motion videos and
the static-vs-motion difference of the paper's Fig. 4 is weak or absent.
""" if kind_acc.get("motion", 100.0) < 75.0 else "") + f"""

## Commands

```
""" + (f"""{trained_by}   # synth data, then trains upper, policy, joint (torch default threads; its times above)
OMP_NUM_THREADS=1 .venv/bin/python -m ada3d_edge.cli train random-ft {recipe} --set output_dir={work} --set data.root={work}/data
""" if trained_by else f"""OMP_NUM_THREADS=1 .venv/bin/python -m ada3d_edge.cli synth {work}/data {synth}
for s in upper policy joint random-ft; do
  OMP_NUM_THREADS=1 .venv/bin/python -m ada3d_edge.cli train $s {recipe} --set output_dir={work} --set data.root={work}/data
done
""") + f""".venv/bin/python -m ada3d_edge.cli eval {work}/joint/final.pt --data {work}/data/val.txt --upper {work}/upper/final.pt --random-ft {work}/random_ft/final.pt --json {work}/eval_joint.json
.venv/bin/python -m ada3d_edge.cli eval {work}/policy/final.pt --data {work}/data/val.txt --upper {work}/upper/final.pt --json {work}/eval_policy.json
```
"""
out_md.write_text(md)
print(md)
EOF
