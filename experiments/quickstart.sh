#!/usr/bin/env bash
# The whole pipeline on the synthetic default at a CPU-sized budget (README's first command runs this):
# synth -> prepare (the paper's random split and the spatial-block split) -> show -> nas-search -> nas-export
# -> retrain on each split, and reading the outcrop too -> evaluate -> predict, then a summary
# (ggmnet.studies.demo_summary). 15.3 minutes on two CPU cores with nothing else running (2026-12-06).
# Outputs go to $OUT (default runs/quickstart). Rerunning resumes: finished steps are skipped.
set -euo pipefail
cd "$(dirname "$0")/.."
OUT="${OUT:-runs/quickstart}"
SEED="${SEED:-0}"
export WANDB_MODE="${WANDB_MODE:-offline}" WANDB_SILENT=true WANDB_DIR="$OUT"
mkdir -p "$OUT"
step() { printf '\n== %s ==\n' "$*"; }
start=$(date +%s)

if [ ! -f "$OUT/raw/bouguer.nc" ]; then
  step "1/10 synthetic scene (E65-95, N40-55, 2 arc-minutes, 500 km margin)"
  ggm-data synth --out "$OUT/raw" --seed "$SEED"
fi
for split in random spatial-block; do
  data="$OUT/data-$split"
  if [ ! -f "$data/manifest.json" ]; then
    step "2/10 residual anomaly and Table 2 windows, $split split"
    ggm-data prepare --bouguer "$OUT/raw/bouguer.nc" --labels "$OUT/raw/labels.nc" \
      --bedrock "$OUT/raw/bedrock.nc" --out "$data" --split "$split" --seed "$SEED"
  fi
done
step "3/10 overview picture"
ggm-data show "$OUT/data-spatial-block" --out "$OUT/overview.png"

# The search scores its candidates on the spatial-block split, where no validation window overlaps training.
if [ ! -f "$OUT/genotype.json" ]; then
  step "4/10 architecture search (CPU recipe, depth 22)"
  nas-search --depth 22 --data "$OUT/data-spatial-block" --out "$OUT/search" --config experiments/search_cpu.yaml \
    --seed "$SEED" $( [ -f "$OUT/search/checkpoints/last.pt" ] && echo --resume )
  step "5/10 export the genotype"
  nas-export "$OUT/genotype.json" --run "$OUT/search"
fi

for split in random spatial-block; do
  step "6/10 retrain GGMNet on the $split split (CPU recipe)"
  retrain --genotype "$OUT/genotype.json" --data "$OUT/data-$split" --out "$OUT/retrain-$split" \
    --config experiments/retrain_cpu.yaml --seed "$SEED" \
    $( [ -f "$OUT/retrain-$split/checkpoints/last.pt" ] && echo --resume )
done

# The same genotype, reading the outcrop geology beside the gravity: trained to fill outcrop hidden under the
# cover of another part of the map, so that it fills the real cover from the outcrop around it.
step "7/10 retrain GGMNet reading the outcrop too, spatial-block split (CPU recipe + --geology-prior)"
retrain --genotype "$OUT/genotype.json" --data "$OUT/data-spatial-block" --out "$OUT/retrain-outcrop" \
  --config experiments/retrain_cpu_outcrop.yaml --seed "$SEED" \
  $( [ -f "$OUT/retrain-outcrop/checkpoints/last.pt" ] && echo --resume )

step "8/10 evaluate: validation windows of both splits, test windows (mostly cover) of the spatial-block models"
ggm-evaluate --checkpoint "$OUT/retrain-random/checkpoints/best.pt" --split val --out "$OUT/eval-random"
ggm-evaluate --checkpoint "$OUT/retrain-spatial-block/checkpoints/best.pt" --split val --out "$OUT/eval-spatial-block"
ggm-evaluate --checkpoint "$OUT/retrain-spatial-block/checkpoints/best.pt" --split test --out "$OUT/eval-spatial-block"
ggm-evaluate --checkpoint "$OUT/retrain-outcrop/checkpoints/best.pt" --split test --out "$OUT/eval-outcrop"

# the same test windows' cover by its thickness, which the synthetic scene knows
python experiments/cover_depth.py --checkpoint "$OUT/retrain-spatial-block/checkpoints/best.pt" \
  --data "$OUT/data-spatial-block" --scene "$OUT/raw" --split test --out "$OUT/eval-spatial-block/cover_depth.json"

step "9/10 predict the Junggar Basin (E80-92, N43-48): its cover filled by the network that reads the outcrop"
ggm-predict --checkpoint "$OUT/retrain-outcrop/checkpoints/best.pt" --bouguer "$OUT/raw/bouguer.nc" \
  --region 80,92,43,48 --labels "$OUT/raw/labels.nc" --out "$OUT/junggar"

step "10/10 summary"
python -m ggmnet.studies.demo_summary "$OUT" "$start"
