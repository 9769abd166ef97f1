#!/usr/bin/env bash
# Must-show of `r1 tune` (issue 15 section 2) on the digit-scene detector, at a reduced budget
# (300 optimizer steps per run, validation every 50): shipped config over 3 seeds, a pruned study
# killed with -9 mid-way and re-run, the best config over the same 3 seeds.
# Usage: benchmarks/tune_det_digits.sh OUT_DIR [TRIALS]   (pinned to core 1, one thread per run)
set -euo pipefail
OUT=${1:?usage: $0 OUT_DIR [TRIALS]}
TRIALS=${2:-14}
PY=${PYTHON:-python}
BUDGET=(train.max_steps=300 train.eval_every=50 run.threads=1)
mkdir -p "$OUT"
for seed in 0 1 2; do
  [ -f "$OUT/base_s$seed/metrics.json" ] || taskset -c 1 $PY -m r1.cli train configs/det/digits.yaml "${BUDGET[@]}" \
      run.seed=$seed run.dir="$OUT/base_s$seed" --no-progress > "$OUT/base_s$seed.log" 2>&1
done
TUNE=(-m r1.cli tune configs/det/digits.yaml --space configs/det/spaces/digits.yaml --trials "$TRIALS"
      --dir "$OUT/study" --pruner median --startup 4 --jobs 1 "${BUDGET[@]}")
# first invocation: killed with -9 after KILL_AFTER seconds, mid-study
taskset -c 1 $PY "${TUNE[@]}" > "$OUT/study_run1.log" 2>&1 &
pid=$!
sleep "${KILL_AFTER:-240}"
kill -9 $pid || true
wait $pid || true
echo "killed after ${KILL_AFTER:-240}s" >> "$OUT/study_run1.log"
cp "$OUT/study/tune.db" "$OUT/tune_after_kill.db"
taskset -c 1 $PY "${TUNE[@]}" > "$OUT/study_run2.log" 2>&1
for seed in 0 1 2; do
  [ -f "$OUT/best_s$seed/metrics.json" ] || taskset -c 1 $PY -m r1.cli train "$OUT/study/best.yaml" \
      run.threads=1 run.seed=$seed run.dir="$OUT/best_s$seed" --no-progress > "$OUT/best_s$seed.log" 2>&1
done
echo done
