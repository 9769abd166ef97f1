#!/usr/bin/env bash
# The CUDA paths end to end on one NVIDIA GPU: cls (fp16 AMP), det (BCCD, full recipe), lm
# (bf16), each with `r1 eval` / `r1 generate`. Prints one summary line per run; logs in LOG_DIR,
# run dirs in RUNS (default /tmp/r1-gpu-runs).
#   benchmarks/gpu_smoke.sh DATA_DIR LOG_DIR      (DATA_DIR holds bccd/ and tinyshakespeare/)
set -uo pipefail
DATA=${1:?DATA_DIR (holding bccd/ and tinyshakespeare/)}; OUT=${2:?LOG_DIR}; RUNS=${RUNS:-/tmp/r1-gpu-runs}
PY=${PYTHON:-python3}
mkdir -p "$OUT" "$RUNS"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
$PY -c "import torch; print('torch', torch.__version__, 'cuda', torch.version.cuda, torch.cuda.get_device_name(0))"
run() {  # name, then r1 arguments
  local name=$1; shift
  local t0=$EPOCHREALTIME
  $PY -m r1.cli "$@" >"$OUT/$name.log" 2>&1
  local rc=$?
  printf '%-22s rc=%s %6.1f s  %s\n' "$name" "$rc" "$($PY -c "print($EPOCHREALTIME - $t0)")" \
    "$(grep -E 'test/|val/|tok/s|error' "$OUT/$name.log" | tail -n 2 | tr '\n' ' ' | cut -c1-220)"
}
run cls-digits-fp16 train configs/cls/digits.yaml run.device=cuda train.amp=fp16 run.dir="$RUNS/cls"
run cls-eval eval "$RUNS/cls"
run lm-shakespeare-bf16 train configs/lm/shakespeare-char.yaml data.path="$DATA/tinyshakespeare/input.txt" \
    run.device=cuda train.amp=bf16 run.dir="$RUNS/lm"
run lm-generate generate "$RUNS/lm" --prompt "ROMEO:" --max-new-tokens 64 --temperature 0
run det-bccd-fp16 train configs/det/bccd.yaml data.root="$DATA/bccd" run.device=cuda train.amp=fp16 \
    data.num_workers=4 run.threads=4 run.dir="$RUNS/det"
run det-eval eval "$RUNS/det" data.root="$DATA/bccd"
$PY -c "import tensorrt" 2>/dev/null && echo "tensorrt: present (pytest -m gpu tests/export/test_tensorrt.py)" || echo "tensorrt: not installed"
