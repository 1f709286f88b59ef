#!/usr/bin/env bash
# Every GPU check of the project in one run, for a machine lent for a few minutes:
#   benchmarks/gpu.sh OUT_DIR
# 1. nvidia-smi's view of the GPU; 2. benchmarks/gpu.py: train-step MFU of three shapes
# (cuDNN/XLA attention x remat policies) and bf16 against float32 loss; 3. the muP
# coordinate check at GPU widths 256..2048 (table, verdict and plot). Each part's output
# goes to OUT_DIR; a part that fails does not stop the others. About 10 minutes on an H200.
set -uo pipefail
out=${1:?usage: $0 OUT_DIR}
mkdir -p "$out"
out=$(cd "$out" && pwd)  # the repository root below is the working folder
cd "$(dirname "$0")/.." || exit 2
status=0
nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.max.sm --format=csv \
  >"$out/nvidia_smi.csv" 2>&1 || echo "gpu.sh: nvidia-smi failed" >&2
python benchmarks/gpu.py --out "$out/gpu.json" 2>&1 | tee "$out/gpu.log" || status=1
python -m llmjax.scaling coord-check --config experiments/base.py --parametrization mup \
  --untied --readout-zero-init --widths 256,512,1024,2048 --out "$out/coord_check_mup.png" \
  2>&1 | tee "$out/coord_check_mup.log" || status=1
exit "$status"
