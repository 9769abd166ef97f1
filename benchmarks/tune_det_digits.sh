#!/usr/bin/env bash
# Must-show of `r1 tune` (issue 15 section 2) on the digit-scene detector, at a reduced budget
# (300 optimizer steps per run, validation every 50, one thread, pinned to core 1):
#   1. the shipped config over seeds 0, 1, 2 (its seed-to-seed spread);
#   2. a median-pruned TPE study over configs/det/spaces/digits.yaml (--trials 14 --startup 4), killed
#      with -9 60 s into its second trial, then re-run on the same dir, which marks the killed trial,
#      runs its parameters again and completes the study to TRIALS finished trials (--startup STARTUP;
#      the measured run: 6 and 2, cut down once the shared machine's speed was known);
#   3. with BEST_SEEDS=1, the study's best.yaml over the same 3 seeds.
# Usage: benchmarks/tune_det_digits.sh OUT_DIR [TRIALS]    (PYTHON=... for another interpreter)
set -euo pipefail
OUT=${1:?usage: $0 OUT_DIR [TRIALS]}
TRIALS=${2:-6}
STARTUP=${STARTUP:-2}
PY=${PYTHON:-python}
BUDGET=(train.max_steps=300 train.eval_every=50 run.threads=1)
mkdir -p "$OUT"
for seed in 0 1 2; do
  [ -f "$OUT/base_s$seed/metrics.json" ] || taskset -c 1 $PY -m r1.cli train configs/det/digits.yaml "${BUDGET[@]}" \
      run.seed=$seed run.dir="$OUT/base_s$seed" --no-progress > "$OUT/base_s$seed.log" 2>&1
done
TUNE=(-m r1.cli tune configs/det/digits.yaml --space configs/det/spaces/digits.yaml --dir "$OUT/study"
      --pruner median --jobs 1 "${BUDGET[@]}")
taskset -c 1 $PY "${TUNE[@]}" --trials 14 --startup 4 > "$OUT/study_run1.log" 2>&1 &
pid=$!
while [ ! -f "$OUT/study/trials/0001/history.jsonl" ]; do sleep 2; done
sleep 60
kill -9 $pid
wait $pid || true
echo "kill -9 at $(date -u +%T)" >> "$OUT/study_run1.log"
cp "$OUT/study/tune.db" "$OUT/tune_after_kill.db"
taskset -c 1 $PY "${TUNE[@]}" --trials "$TRIALS" --startup "$STARTUP" > "$OUT/study_run2.log" 2>&1
if [ "${BEST_SEEDS:-0}" = 1 ]; then
  for seed in 0 1 2; do
    [ -f "$OUT/best_s$seed/metrics.json" ] || taskset -c 1 $PY -m r1.cli train "$OUT/study/best.yaml" \
        run.threads=1 run.seed=$seed run.dir="$OUT/best_s$seed" --no-progress > "$OUT/best_s$seed.log" 2>&1
  done
fi
echo done
