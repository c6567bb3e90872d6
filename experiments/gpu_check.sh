#!/usr/bin/env bash
# GPU readiness check: the first thing to run when a CUDA machine is at hand (about 8 minutes on one GPU).
#
#   bash experiments/gpu_check.sh [--out DIR] [--dry-run]
#
# Steps, each timed, each a line in the summary (OK / FAILED / SKIPPED) at the end:
#   1. environment: torch, CUDA, the GPU, bf16 support;
#   2. pytest -m gpu: the CUDA tests (AMP loss, SyncBatchNorm/NCCL helpers, deformable conv on CUDA, ...);
#   3. retrain throughput and peak memory at 1024 px with AMP, batch 4 (the paper's per-GPU batch): GGMNet
#      (depth 22, full model) and HRNet-W32 (benchmarks/bench_train.py);
#   4. one short paper-scale search epoch (experiments/search_paper.yaml, 2048 px tiles cropped to 1024, a few
#      steps) and one short paper-scale retrain epoch from its genotype (experiments/retrain_paper.yaml);
#   5. the summary (also written to OUT/summary.txt).
# --dry-run runs on a CPU: it checks that every file, console script and option the steps use exists and
# parses (each command's --help, the YAML recipes against the parsers), and prints the commands it would run.
set -uo pipefail
cd "$(dirname "$0")/.."

OUT="runs/gpu-check"
DRY=0
while [ $# -gt 0 ]; do
  case "$1" in
    --dry-run) DRY=1 ;;
    --out) OUT="$2"; shift ;;
    -h|--help) sed -n '2,15p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "gpu_check.sh: error: unknown option $1 (expected --out DIR or --dry-run)" >&2; exit 2 ;;
  esac
  shift
done

# The environment that runs the checks: $PYTHON if set, else the python on PATH when it imports ggmnet (an
# activated conda environment or venv), else ./.venv. Its console scripts (nas-search, retrain, ...) are in its
# scripts folder (sysconfig), or, failing that, wherever PATH finds nas-search.
if [ -n "${PYTHON:-}" ]; then
  PY="$PYTHON"
elif command -v python >/dev/null 2>&1 && python -c "import ggmnet" >/dev/null 2>&1; then
  PY="$(command -v python)"
elif command -v python3 >/dev/null 2>&1 && python3 -c "import ggmnet" >/dev/null 2>&1; then
  PY="$(command -v python3)"
elif [ -x .venv/bin/python ]; then
  PY=.venv/bin/python
else
  echo "gpu_check.sh: error: no python that imports ggmnet (activate its environment, set PYTHON, or make install)" >&2
  exit 2
fi
BIN="$("$PY" -c 'import sysconfig; print(sysconfig.get_path("scripts"))' 2>/dev/null)"
if [ ! -x "$BIN/nas-search" ] && command -v nas-search >/dev/null 2>&1; then
  BIN="$(dirname "$(command -v nas-search)")"
fi
echo "gpu_check: python $PY, console scripts in $BIN"
export PATH="$BIN:$PATH" WANDB_MODE="${WANDB_MODE:-offline}" WANDB_SILENT=true PYTHONUNBUFFERED=1
mkdir -p "$OUT"
SUMMARY="$OUT/summary.txt"
: > "$SUMMARY"
FAILED=0

# step NAME TIMEOUT_S COMMAND...: runs COMMAND (or, with --dry-run, checks it exists and prints it).
step() {
  local name="$1" limit="$2"; shift 2
  local start=$SECONDS status
  printf '\n== %s ==\n$ %s\n' "$name" "$*"
  if [ "$DRY" = 1 ]; then
    if command -v "$1" >/dev/null 2>&1 || [ -e "$1" ]; then status=OK; else status=FAILED; FAILED=1; fi
    printf '%-58s %-8s (dry run: command found)\n' "$name" "$status" | tee -a "$SUMMARY"
    return
  fi
  timeout "$limit" "$@" 2>&1 | tee "$OUT/$(echo "$name" | tr -c 'A-Za-z0-9\n' '_').log"
  local rc=${PIPESTATUS[0]}
  if [ "$rc" = 0 ]; then status=OK; else status="FAILED($rc)"; FAILED=1; fi
  printf '%-58s %-10s %4d s\n' "$name" "$status" $((SECONDS - start)) | tee -a "$SUMMARY"
}

# check: the parts a dry run can verify on a CPU (files, parsers, recipes).
check() {
  local name="$1"; shift
  if "$@" >/dev/null 2>&1; then
    printf '%-58s OK\n' "$name" | tee -a "$SUMMARY"
  else
    printf '%-58s FAILED\n' "$name" | tee -a "$SUMMARY"; FAILED=1
  fi
}

check "python and ggmnet import" "$PY" -c "import ggmnet, torch, torchvision"
for f in benchmarks/bench_train.py experiments/search_paper.yaml experiments/retrain_paper.yaml; do
  check "file $f" test -f "$f"
done
for cmd in nas-search nas-export retrain ggm-evaluate; do
  check "$cmd --help" "$BIN/$cmd" --help
done
check "bench_train.py --help" "$PY" benchmarks/bench_train.py --help
# The paper recipes must pass the parsers' checks (flags and YAML alike) without running anything.
# The paper recipes and the flags the steps below add must pass the parsers' checks, without running anything.
check "search step's settings parse" "$PY" -c "
from ggmnet.search.cli import build_search_parser
from ggmnet.search.search import SearchConfig
SearchConfig.from_argv(build_search_parser(), ['--config', 'experiments/search_paper.yaml', '--epochs', '1',
    '--warmup-epochs', '0', '--steps-per-epoch', '4', '--val-tiles', '2', '--num-workers', '4'])"
check "retrain step's settings parse" "$PY" -c "
from ggmnet.retrain.cli import build_retrain_parser
from ggmnet.retrain.train import RetrainConfig
RetrainConfig.from_argv(build_retrain_parser(), ['--config', 'experiments/retrain_paper.yaml', '--genotype',
    'g.json', '--epochs', '1', '--steps-per-epoch', '4', '--val-tiles', '2'])"

if [ "$DRY" = 0 ] && ! "$PY" -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)"; then
  echo "gpu_check.sh: error: no CUDA device here (use --dry-run to check the script on a CPU)" >&2
  exit 2
fi

step "environment" 60 "$PY" -c "
import torch
print('torch', torch.__version__, 'cuda', torch.version.cuda)
for i in range(torch.cuda.device_count()):
    p = torch.cuda.get_device_properties(i)
    print(i, p.name, f'{p.total_memory / 2**30:.0f} GiB', 'bf16' if torch.cuda.is_bf16_supported() else 'fp16')"
step "pytest -m gpu" 240 "$PY" -m pytest -q -m gpu -p no:cacheprovider tests/
step "retrain throughput GGMNet depth 22, 1024 px, AMP" 120 \
  "$PY" benchmarks/bench_train.py --model ggmnet --depth 22 --skip-cpu --gpu-size 1024 --gpu-batch 4 --steps 5
step "retrain throughput HRNet-W32, 1024 px, AMP" 120 \
  "$PY" benchmarks/bench_train.py --model hrnet_w32 --skip-cpu --gpu-size 1024 --gpu-batch 4 --steps 5

DATA="$OUT/data"
if [ "$DRY" = 0 ] && [ ! -f "$DATA/manifest.json" ]; then
  "$BIN/ggm-data" synth --out "$OUT/raw" --seed 0 >/dev/null &&
  "$BIN/ggm-data" prepare --bouguer "$OUT/raw/bouguer.nc" --labels "$OUT/raw/labels.nc" \
    --bedrock "$OUT/raw/bedrock.nc" --out "$DATA" >/dev/null
fi
step "paper-scale search: 1 epoch of 4 steps, 2048 px tiles" 240 \
  "$BIN/nas-search" --config experiments/search_paper.yaml --data "$DATA" --out "$OUT/search" \
  --epochs 1 --warmup-epochs 0 --steps-per-epoch 4 --val-tiles 2 --num-workers 4 --wandb-mode disabled
step "export the genotype" 60 "$BIN/nas-export" "$OUT/genotype.json" --run "$OUT/search"
step "paper-scale retrain: 1 epoch of 4 steps, 2048 px tiles" 240 \
  "$BIN/retrain" --config experiments/retrain_paper.yaml --genotype "$OUT/genotype.json" --data "$DATA" \
  --out "$OUT/retrain" --epochs 1 --steps-per-epoch 4 --val-tiles 2 --wandb-mode disabled

printf '\n== summary (%s) ==\n' "$SUMMARY"
cat "$SUMMARY"
if [ "$FAILED" = 0 ]; then echo "gpu_check: all steps passed"; else echo "gpu_check: some steps FAILED"; fi
exit "$FAILED"
