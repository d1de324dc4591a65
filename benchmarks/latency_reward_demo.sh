#!/usr/bin/env bash
# Latency-aware reward vs the paper's usage reward (issue 14 item 4), on one machine (this CPU).
#
# From one trained Upper (stage 0): export it, measure its latency table (`ada3d bench --lut`), train
# the policy stage (stage 1, backbone frozen) twice from that Upper, once with policy.cost=usage (the
# paper's O(u) = |u|/T, O(v) = (|v|/K)^2) and once with policy.cost=latency (the table), then for each:
# `ada3d eval` (top-1, GFLOPs, usage) and `ada3d bench` of its exported bundle (adaptive vs Upper end to
# end on validation clips, measured here). Writes $OUT_MD from the JSON files (no number typed by hand).
#
#   benchmarks/latency_reward_demo.sh
#       # the demo: UPPER=runs/demo/train/upper/final.pt, DATA=runs/demo/data, WORK=runs/lut/demo
#   TOY=1 WORK=runs/lut/toy OUT_MD=benchmarks/results/latency_reward_toy.md benchmarks/latency_reward_demo.sh
#       # a few minutes: a small synthetic set and a toy Upper trained here first
#   GAMMA=4 CLIPS=100 REPEATS=10 ...           # reward gamma (default: the recipe's), bench clips, LUT rounds
#   SEED=1 WORK=... OUT_MD=...                 # another seed for both trainings (run-to-run spread)
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
RECIPE=${RECIPE:-train/demo.yaml}
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}
ADA3D=("$PY" -m ada3d_edge.cli)
TOY=${TOY:-0}
if [ "$TOY" = 1 ]; then
  WORK=${WORK:-runs/lut/toy}
  DATA=${DATA:-$WORK/data}
  UPPER=${UPPER:-$WORK/upper_run/upper/final.pt}
  OUT_MD=${OUT_MD:-benchmarks/results/latency_reward_toy.md}
  SYNTH_ARGS=(--classes 8 --videos-per-class 40 --val-per-class 10 --size 32 --frames 24 --seed 0)
  SIZE_SETS=(--set data.crop=32 --set data.test_crop=32 --set "data.short_side_range=[32,36]" --set data.stride=2
             --set "model.backbone.widths=[8,16,32,64]" --set model.policy_size=32 --set data.num_clips=1
             --set data.val_every=0 --set optim.epochs=${UPPER_EPOCHS:-6} --set policy.epochs=${POLICY_EPOCHS:-3}
             --set bn_calibration.batches=10)
else
  WORK=${WORK:-runs/lut/demo}
  DATA=${DATA:-runs/demo/data}
  UPPER=${UPPER:-runs/demo/train/upper/final.pt}
  OUT_MD=${OUT_MD:-benchmarks/results/latency_reward_demo.md}
  SIZE_SETS=()
fi
CLIPS=${CLIPS:-200}
REPEATS=${REPEATS:-20}
GAMMA_SETS=()
[ -n "${GAMMA:-}" ] && GAMMA_SETS=(--set "policy.gamma=$GAMMA")
SEED_SETS=()
[ -n "${SEED:-}" ] && SEED_SETS=(--set "seed=$SEED")   # SEED=N: another run of both stage-1 trainings
SETS=(--set "data.root=$DATA" "${SIZE_SETS[@]}" "${GAMMA_SETS[@]}" "${SEED_SETS[@]}")
mkdir -p "$WORK" "$(dirname "$OUT_MD")"
LOAD_START=$(cut -d' ' -f1-3 /proc/loadavg)
T_START=$(date +%s)

if [ "${REPORT_ONLY:-0}" != 1 ]; then   # REPORT_ONLY=1: rewrite $OUT_MD from the JSON files already in $WORK
if [ "$TOY" = 1 ]; then
  [ -f "$DATA/val.txt" ] || "${ADA3D[@]}" synth "$DATA" "${SYNTH_ARGS[@]}" --quiet --overwrite
  if [ ! -f "$UPPER" ]; then
    t0=$(date +%s)
    "${ADA3D[@]}" train upper "$RECIPE" "${SETS[@]}" --set "output_dir=$WORK/upper_run" --quiet
    echo "trained by this script in $(( $(date +%s) - t0 )) s" > "$WORK/upper_status.txt"
  fi
fi
[ -f "$UPPER" ] || { echo "Error: $UPPER does not exist (train Upper first, or set UPPER=...)" >&2; exit 2; }

# 1. the latency table of this Upper's configurations, on this machine
"${ADA3D[@]}" export "$UPPER" --out "$WORK/bundle_upper" --overwrite --quiet
"${ADA3D[@]}" bench "$WORK/bundle_upper" --threads 1 --repeats "$REPEATS" --warmup 3 --batch 1 --clips 4 \
  --no-memory --quiet --json "$WORK/bench_lut.json" --lut "$WORK/lut.json" > "$WORK/bench_lut.txt"

# 2. stage 1 from the same Upper under each cost; eval and bench of each (the bench times only Upper's
#    engine per configuration: its end-to-end section is the measurement)
read -r T UPPER_MASK < <("$PY" -c "import json; d = json.load(open('$WORK/lut.json')); print(d['num_frames'], d['upper_mask'])")
for cost in usage latency; do
  extra=(--set "policy.cost=$cost")
  [ "$cost" = latency ] && extra+=(--set "policy.cost_lut=$WORK/lut.json")
  t0=$(date +%s)
  "${ADA3D[@]}" train policy "$RECIPE" "${SETS[@]}" "${extra[@]}" --set "output_dir=$WORK/$cost" \
    --init-from "$UPPER" --overwrite --quiet
  echo "$(( $(date +%s) - t0 ))" > "$WORK/$cost/train_seconds.txt"
  "${ADA3D[@]}" eval "$WORK/$cost/policy/final.pt" --data "$DATA/val.txt" --root "$DATA" --upper "$UPPER" \
    --json "$WORK/eval_$cost.json" --quiet
  "${ADA3D[@]}" export "$WORK/$cost/policy/final.pt" --out "$WORK/bundle_$cost" --overwrite --quiet
  "${ADA3D[@]}" bench "$WORK/bundle_$cost" --threads 1 --data "$DATA/val.txt" --root "$DATA" --clips "$CLIPS" \
    --repeats 3 --warmup 3 --passes 2 --batch 1 --frames "$T" --masks "$UPPER_MASK" \
    --no-memory --quiet --json "$WORK/bench_$cost.json" > "$WORK/bench_$cost.txt"
done
echo "$(( $(date +%s) - T_START ))" > "$WORK/wall_seconds.txt"
echo "$LOAD_START at the start, $(cut -d' ' -f1-3 /proc/loadavg) at the end" > "$WORK/load.txt"
fi

ENV_SHOWN="CLIPS=$CLIPS REPEATS=$REPEATS${GAMMA:+ GAMMA=$GAMMA}${SEED:+ SEED=$SEED}"
[ "$TOY" = 1 ] && ENV_SHOWN="TOY=1 UPPER_EPOCHS=${UPPER_EPOCHS:-6} POLICY_EPOCHS=${POLICY_EPOCHS:-3} $ENV_SHOWN"
[ "$TOY" = 1 ] || ENV_SHOWN="UPPER=$UPPER DATA=$DATA $ENV_SHOWN"
"$PY" - "$WORK" "$OUT_MD" "$LOAD_START" "$ENV_SHOWN" "$RECIPE" "$UPPER" "$DATA" "$TOY" "${SETS[*]}" <<'EOF'
import json, os, platform, sys, time
from pathlib import Path

work, out_md, load, env_shown, recipe, upper, data, toy, sets = sys.argv[1:10]
work = Path(work)
lut = json.loads((work / "lut.json").read_text())
res = {}
for cost in ("usage", "latency"):
    ev = json.loads((work / f"eval_{cost}.json").read_text())
    bench = json.loads((work / f"bench_{cost}.json").read_text())
    res[cost] = {"eval": {r["method"]: r for r in ev["rows"]}, "ev": ev, "bench": bench,
                 "train_s": int((work / cost / "train_seconds.txt").read_text())}
cpu = next((l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name")), platform.processor())
load_end = " ".join(open("/proc/loadavg").read().split()[:3])
t = lut["num_frames"]
masks = sorted({e["mask"] for e in lut["entries"]}, reverse=True)
cost = {(e["mask"], e["frames"]): e["cost"] for e in lut["entries"]}
lut_rows = "\n".join(f"| {m} | " + " | ".join(f"{cost[(m, f)]:.3f}" for f in range(1, t + 1)) + " |" for m in masks)

rows = []
for name, r in res.items():
    ada, up = r["eval"]["Ada3D"], r["eval"]["Upper"]
    b = r["bench"]
    a_ms, u_ms = b["adaptive"]["latency_ms"], b["upper"]["latency_ms"]
    rows.append((name, ada, up, b, a_ms, u_ms))
table = "\n".join(
    f"| {name} | {ada['metric']:.1f} | {up['metric']:.1f} | {ada['gflops']:.4f} | {ada['gflops_backbone']:.4f} | "
    f"{ada['mean_3d']:.2f} | {ada['mean_frames']:.2f} | {100 * (b['adaptive']['accuracy'] or 0):.1f} | "
    f"{a_ms['mean']:.2f} | {a_ms['p50']:.2f} | {a_ms['p95']:.2f} | {u_ms['mean']:.2f} | "
    f"**{a_ms['mean'] / u_ms['mean']:.3f}** | {b['adaptive']['parts_ms']['backbone']:.2f} | "
    f"{b['adaptive']['parts_ms']['policy']:.2f} | {b['upper']['parts_ms']['backbone']:.2f} | "
    f"**{b['adaptive']['parts_ms']['backbone'] / b['upper']['parts_ms']['backbone']:.3f}** | {r['train_s']} |"
    for (name, ada, up, b, a_ms, u_ms), r in zip(rows, res.values()))
(u_name, u_ada, _, _, u_a, u_u), (l_name, l_ada, _, _, l_a, l_u) = rows
acc_gap = l_ada["metric"] - u_ada["metric"]
ratio_u, ratio_l = u_a["mean"] / u_u["mean"], l_a["mean"] / l_u["mean"]
equal_acc = abs(acc_gap) <= 0.5
lat_gap = ratio_l - ratio_u
if not equal_acc and abs(lat_gap) <= 0.01:  # same measured latency (within 1% of Upper): accuracy decides
    better = "latency" if acc_gap > 0 else "usage"
    verdict = (f"The two policies run at the same measured latency ({ratio_l:.3f} and {ratio_u:.3f} of Upper's mean, "
               f"within 1%), and the {better}-trained one is {abs(acc_gap):.1f} points more accurate: "
               f"**{better} wins** (at equal latency, not at the issue's equal accuracy).")
elif not equal_acc and (acc_gap > 0) == (lat_gap < 0):  # one is both more accurate and faster
    better = "latency" if acc_gap > 0 else "usage"
    verdict = (f"The {better}-trained policy is both more accurate ({abs(acc_gap):.1f} points) and faster "
               f"({min(ratio_l, ratio_u):.3f} against {max(ratio_l, ratio_u):.3f} of Upper's mean): **{better} wins**.")
elif not equal_acc:
    verdict = (f"The two policies are **not at equal accuracy** (latency minus usage: {acc_gap:+.1f} points; the "
               "comparison asks for 0.5): the latency numbers below compare different trade-offs, not a win.")
elif ratio_l < ratio_u:
    verdict = (f"At equal accuracy ({acc_gap:+.1f} points), the latency-trained policy runs at {ratio_l:.3f} of Upper's "
               f"mean latency against {ratio_u:.3f} for the usage-trained one: **latency wins**.")
else:
    verdict = (f"At equal accuracy ({acc_gap:+.1f} points), the latency-trained policy runs at {ratio_l:.3f} of Upper's "
               f"mean latency against {ratio_u:.3f} for the usage-trained one: **usage wins (or ties)**.")
chosen = {name: r["bench"]["adaptive"].get("chosen", {}) for name, r in res.items()}
top = lambda c: ", ".join(f"{k}: {v}" for k, v in list(c.items())[:6])
cmd = f"{env_shown} WORK={work} benchmarks/latency_reward_demo.sh"
wall = (work / "wall_seconds.txt").read_text().strip()
status = work / "upper_status.txt"
upper_note = f" ({status.read_text().strip()})" if status.is_file() else " (given)"
load_file = work / "load.txt"
load_text = load_file.read_text().strip() if load_file.is_file() else "not recorded by the run"
md = f"""# Latency-aware reward vs the usage reward ({'toy setting' if toy == '1' else 'the demo'}, this CPU)

Written by `benchmarks/latency_reward_demo.sh` (`{cmd}`; recipe `{recipe}` with `{sets}`) from the JSON files in
`{work}`. Upper: `{upper}`{upper_note}; data `{data}`. No number is typed by hand.

Machine: {cpu}, {os.cpu_count()} cores, no GPU, ONNX Runtime with 1 thread, OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS')}.
Other processes may share the 2 cores (load average {load_text}), so
latencies are noisy; the ratios to Upper are measured within each bench run (interleaved clip by clip).
Wall time of the script's last full run: {wall} s, Upper not included when it existed before.

## The latency table (`ada3d bench {work}/bundle_upper --lut {work}/lut.json`)

Median latency at batch 1 of each configuration (stage mask, 1 = 3D) and T', over Upper at T'={t}
({lut['backend']}, threads {lut['threads']}, arch {lut['arch']}, crop {lut['crop_size']}):

| mask | """ + " | ".join(f"T'={f}" for f in range(1, t + 1)) + """ |
|---|""" + "---|" * t + f"""
{lut_rows}

## Stage 1 trained under each cost, from the same Upper

`eval`: `ada3d eval` on the validation list (the recipe's clips per video). `bench`: `ada3d bench` of the
exported bundle, centre clips of {rows[0][3]['clips']}, adaptive (selection net + preprocessing + backbone)
and Upper end to end, 2 passes, clip by clip interleaved.

| cost | top-1 (eval) | Upper top-1 | GFLOPs/clip (eval, incl. selection) | backbone GFLOPs | # 3D | # Frame | top-1 (bench clips) | adaptive mean ms | p50 | p95 | Upper mean ms | adaptive / Upper | adaptive backbone ms | selection net ms | Upper backbone ms | backbone / Upper's | train s |
|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|
{table}

{verdict}

"adaptive / Upper" is end to end (the selection net is a fixed cost the reward cannot change);
"backbone / Upper's" is the part the reward prices: the backbone call alone, adaptive over Upper.

Configurations chosen on the bench clips (mask/T': clips): usage: {top(chosen['usage'])}; latency: {top(chosen['latency'])}.
"""
Path(out_md).write_text(md, encoding="utf-8")
print(f"wrote {out_md}")
EOF
