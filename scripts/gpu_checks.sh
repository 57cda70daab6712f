#!/usr/bin/env bash
# The checks that need a CUDA GPU, in one run (CI has no GPU; these tests skip there).
#
#   OUT=results/gpu bash scripts/gpu_checks.sh
#
# Runs from the repository root with whatever python3 holds torch (no install needed:
# the checkout is put on PYTHONPATH, the root conftest.py registers the plugin, and step
# 0 compiles the ROAD kernel in place, which needs gcc):
#   1. the CUDA tests (float16/bfloat16 layer masking, CUDA graph replays, ROAD on the
#      device, the noise's bits equal to the CPU's);
#   2. the audit of resnet18 on the GPU with two xdist workers (both share GPU 0 on a
#      one-GPU machine), scorecard to $OUT/audit_cuda.{json,md};
#   3. the benchmark on the GPU, float32 and bfloat16: strategies as ratios to the
#      plain forward (with NAME+graphs rows: the engine strategies replaying CUDA
#      graphs) and ROAD against SciPy, to $OUT/bench_cuda*/.
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-results/gpu}
mkdir -p "$OUT"
export HF_HUB_OFFLINE=1 PYTHONUNBUFFERED=1 PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
PY=${PYTHON:-python3}
status=0

nvidia-smi -L || true
$PY -c "import torch, timm; print('torch', torch.__version__, 'timm', timm.__version__, \
'cuda', torch.cuda.is_available(), torch.cuda.get_device_name(0) if torch.cuda.is_available() else '')"

echo "== 0. the ROAD solver's CPU kernel (pip install builds it; this run has no install)"
# The same flags as [[tool.setuptools.ext-modules]] in pyproject.toml.
SUFFIX=$($PY -c "import sysconfig; print(sysconfig.get_config_var('EXT_SUFFIX'))")
${CC:-gcc} -O3 -std=c99 -ffp-contract=off -fopenmp -pthread -shared -fPIC \
    -o "maskbench/inpaint/_road_kernels$SUFFIX" maskbench/inpaint/_road_kernels.c || status=1

echo "== 1. CUDA tests"
$PY -m pytest -q -p no:cacheprovider -rs tests/engine/test_engine_dtypes.py \
    tests/engine/test_engine_graphs.py tests/inpaint/test_road.py tests/test_seeding.py 2>&1 \
    | tee "$OUT/cuda_tests.log" || status=1

echo "== 2. audit of resnet18 on cuda, -n 2"
$PY -m pytest -q -p no:cacheprovider --model resnet18 --device cuda -n 2 \
    --maskbench-report "$OUT/audit_cuda.json" 2>&1 | tail -25 || status=1

echo "== 3. benchmark on cuda"
$PY -m maskbench bench --device cuda --cuda-graphs --out "$OUT/bench_cuda" 2>&1 \
    | grep -v "^\[maskbench" || status=1
$PY -m maskbench bench --device cuda --cuda-graphs --dtype bfloat16 --no-road \
    --out "$OUT/bench_cuda_bf16" 2>&1 | grep -v "^\[maskbench" || status=1
exit $status
