#!/usr/bin/env bash
# The paper's ablation tables (Sec. 4.3) on this machine's CPU, written under benchmarks/results/:
#   Table 5 (the two training stages) and Table 6 (one learned head) on the demo data, reusing the
#   demo's Upper; Table 3 (policy transfer) from the demo set (its full Ada3D's selection network)
#   to a toy-size `ada3d synth --class-set b` set with other classes. No number is typed by hand:
#   the tables are `ada3d eval --table N --json` output rendered by paper_tables.format_paper_table.
#
#   benchmarks/paper_tables.sh          # DEMO=runs/demo (data/, train/upper/final.pt), WORK=runs/tables
#   DEMO=/work/runs/demo WORK=/work/runs/tables benchmarks/paper_tables.sh
#   TOY=1 benchmarks/paper_tables.sh    # a smoke run at toy size (~5 min idle): its own small set a
#                                       # and Upper, no demo needed; writes paper_table{5,6,3}_toy_smoke.*
#   SKIP_TRAIN=1 benchmarks/paper_tables.sh   # re-evaluate and re-report the checkpoints already in WORK
#
# Budget (idle 2-core CPU, OMP_NUM_THREADS=2, demo timings of an earlier benchmarks/results/demo_full.log:
# ~47 s per policy epoch and ~70 s per joint epoch over the demo's 1600 videos): policy 4 epochs,
# joint 2, joint-from-upper 2, random-ft 2 (train/demo.yaml's), Table-3 set b of 8 x 60 videos with
# its Upper 10 epochs and transfer 4, three evals at 3 clips: ~15 min, under 30.
# Every stage retrains with --overwrite; WORK is this script's own folder (nothing under DEMO is written).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
RECIPE=${RECIPE:-train/demo.yaml}
WORK=${WORK:-runs/tables}
DEMO=${DEMO:-runs/demo}
RESULTS=${RESULTS:-benchmarks/results}
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-2}
ADA3D=("$PY" -m ada3d_edge.cli)
Q=(--quiet)
mkdir -p "$WORK" "$RESULTS"
LOAD_START=$(cut -d' ' -f1-3 /proc/loadavg)
T_START=$(date +%s)
TIMES="$WORK/times.txt"
[ "${SKIP_TRAIN:-0}" = 1 ] && touch "$TIMES" || : > "$TIMES"
timed() {  # timed NAME CMD...: run CMD, record "NAME seconds" in $TIMES (replacing an earlier entry)
  local name=$1 t0; shift
  t0=$(date +%s)
  "$@"
  { grep -v "^$name " "$TIMES" || true; echo "$name $(( $(date +%s) - t0 ))"; } > "$TIMES.tmp"
  mv "$TIMES.tmp" "$TIMES"
}
train() {  # train NAME CMD...: a timed training step, skipped with SKIP_TRAIN=1
  if [ "${SKIP_TRAIN:-0}" = 1 ]; then return 0; fi
  timed "$@"
}

if [ "${TOY:-0}" = 1 ]; then
  TAG5=toy_smoke; TAG6=toy_smoke; TAG3=toy_smoke
  DATA_A="$WORK/data_a"
  SYNTH_A=(--classes 8 --videos-per-class 30 --val-per-class 5 --size 64 --frames 40 --seed 0)
  SYNTH_B=(--classes 8 --videos-per-class 30 --val-per-class 5 --size 64 --frames 40 --seed 1 --class-set b)
  EPOCHS=(--set optim.epochs=12 --set policy.epochs=3 --set joint.epochs=2 --set bn_calibration.batches=8)
  EPOCHS_B=(--set optim.epochs=12 --set transfer.epochs=2 --set bn_calibration.batches=8)
  [ -f "$DATA_A/val.txt" ] || "${ADA3D[@]}" synth "$DATA_A" "${SYNTH_A[@]}" --quiet --overwrite
  A_SETS=(--set "output_dir=$WORK/a" --set "data.root=$DATA_A")
  train upper "${ADA3D[@]}" train upper "$RECIPE" "${A_SETS[@]}" "${EPOCHS[@]}" --overwrite "${Q[@]}"
  UPPER="$WORK/a/upper/final.pt"
  DATA_DESC="toy set a: \`ada3d synth ${SYNTH_A[*]}\`, its own Upper (${EPOCHS[*]})"
else
  TAG5=demo; TAG6=demo; TAG3=toy
  DATA_A="$DEMO/data"
  UPPER="$DEMO/train/upper/final.pt"
  SYNTH_B=(--classes 8 --videos-per-class 60 --val-per-class 10 --size 64 --frames 40 --seed 1 --class-set b)
  EPOCHS=()
  EPOCHS_B=(--set optim.epochs=10 --set transfer.epochs=4)
  for f in "$DATA_A/val.txt" "$UPPER"; do
    [ -f "$f" ] || { echo "Error: $f does not exist; run \`ada3d demo --workdir $DEMO\` (or set DEMO=...) first" >&2; exit 2; }
  done
  A_SETS=(--set "output_dir=$WORK/a" --set "data.root=$DATA_A")
  DATA_DESC="the demo's data ($DATA_A) and Upper ($UPPER)"
fi
A_SETS+=(--set "init_from.policy=$UPPER" --set "init_from.joint_from_upper=$UPPER" --set "init_from.random_ft=$UPPER")
A="$WORK/a"

# --- Tables 5 and 6: the stages on set a --------------------------------------------------------
for stage in policy joint joint-from-upper random-ft; do
  train "$stage" "${ADA3D[@]}" train "$stage" "$RECIPE" "${A_SETS[@]}" "${EPOCHS[@]}" --overwrite "${Q[@]}"
done
VAL_A="$DATA_A/val.txt"
timed eval5 "${ADA3D[@]}" eval "$A/joint/final.pt" --data "$VAL_A" --table 5 --upper "$UPPER" \
  --wo-ft "$A/policy/final.pt" --wo-tr "$A/joint_from_upper/final.pt" --json "$WORK/table5.json" "${Q[@]}"
timed eval6 "${ADA3D[@]}" eval "$A/joint/final.pt" --data "$VAL_A" --table 6 --upper "$UPPER" \
  --random-ft "$A/random_ft/final.pt" --json "$WORK/table6.json" "${Q[@]}"

# --- Table 3: set a's policies on set b ---------------------------------------------------------
DATA_B="$WORK/data_b"
[ -f "$DATA_B/val.txt" ] || "${ADA3D[@]}" synth "$DATA_B" "${SYNTH_B[@]}" --quiet --overwrite
B_SETS=(--set "output_dir=$WORK/b" --set "data.root=$DATA_B" --set "init_from.selection=$A/joint/final.pt")
train upper_b "${ADA3D[@]}" train upper "$RECIPE" "${B_SETS[@]}" "${EPOCHS_B[@]}" --overwrite "${Q[@]}"
train transfer "${ADA3D[@]}" train transfer "$RECIPE" "${B_SETS[@]}" "${EPOCHS_B[@]}" --overwrite "${Q[@]}"
timed eval3 "${ADA3D[@]}" eval "$WORK/b/transfer/final.pt" --data "$DATA_B/val.txt" --table 3 \
  --upper "$WORK/b/upper/final.pt" --json "$WORK/table3.json" "${Q[@]}"

# --- the result files ---------------------------------------------------------------------------
COMMAND="${TOY:+TOY=$TOY }${SKIP_TRAIN:+SKIP_TRAIN=$SKIP_TRAIN }DEMO=$DEMO WORK=$WORK OMP_NUM_THREADS=$OMP_NUM_THREADS benchmarks/paper_tables.sh"
"$PY" - "$WORK" "$RESULTS" "$COMMAND" "$LOAD_START" "$T_START" "$DATA_DESC" "${SYNTH_B[*]}" "$RECIPE" \
  "$TAG5" "$TAG6" "$TAG3" "${EPOCHS[*]:-}" "${EPOCHS_B[*]}" <<'EOF'
import json, os, platform, shutil, sys, time
from pathlib import Path

import torch

from ada3d_edge.train.paper_tables import format_paper_table

(work, results, command, load_start, t_start, data_desc, synth_b, recipe, tag5, tag6, tag3, epochs,
 epochs_b) = sys.argv[1:]
work, results = Path(work), Path(results)
times = dict(line.split() for line in (work / "times.txt").read_text().splitlines())
cpu = next((l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name")),
           platform.processor())
load_end = " ".join(open("/proc/loadavg").read().split()[:3])
total = int(time.time()) - int(t_start)
toy = tag5 == "toy_smoke"
machine = (f"Machine: {cpu}, {os.cpu_count()} CPU cores, no GPU; torch {torch.__version__}; "
           f"OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS', 'unset')}; load average at start {load_start}, "
           f"at the end {load_end} (other jobs share this machine: wall times are indicative).")
banner = ("**TOY-SIZE SMOKE RUN** (`TOY=1`: a tiny set a and its own short-trained Upper, not the demo; "
          "it shows the command works end to end, its numbers say nothing about the methods).\n\n" if toy else "")

def write(table, tag, what, train_keys):
    res = json.loads((work / f"table{table}.json").read_text())
    stem = results / f"paper_table{table}_{tag}"
    shutil.copyfile(work / f"table{table}.json", stem.with_suffix(".json"))
    wall = ", ".join(f"{k} {times[k]} s" for k in train_keys if k in times)
    md = (f"# Paper Table {table} on this CPU ({what})\n\n{banner}"
          f"Written by `benchmarks/paper_tables.sh` from `{work}/table{table}.json` "
          f"(copied to `{stem.with_suffix('.json')}`).\n\n"
          f"Command: `{command}`\n\n{machine}\n\nRecipe `{recipe}`"
          + (f" with `{epochs}`" if epochs and table != "3" else "")
          + (f" with `{epochs_b}`" if table == "3" else "") + f". Wall times: {wall}; this run of the script {total} s"
          + (" (SKIP_TRAIN=1: evaluation only; the training times are those of the run that trained the "
             "checkpoints, the same command without SKIP_TRAIN)" if os.environ.get("SKIP_TRAIN") == "1" else "")
          + ".\n\n"
          + format_paper_table(res) + "\n")
    stem.with_suffix(".md").write_text(md, encoding="utf-8")
    print(md)

write("5", tag5, data_desc, ["upper", "policy", "joint", "joint-from-upper", "eval5"])
write("6", tag6, data_desc, ["upper", "policy", "joint", "random-ft", "eval6"])
write("3", tag3, f"policies of set a's full Ada3D ({data_desc}) transferred to set b: `ada3d synth {synth_b}`",
      ["upper_b", "transfer", "eval3"])
EOF
