#!/usr/bin/env bash
# Under the cover, reading the outcrop (docs/under-the-cover.md): for each scene, GGMNet from gravity alone
# (experiments/retrain_cpu.yaml) and GGMNet reading the outcrop too (experiments/retrain_cpu_outcrop.yaml),
# both from one genotype, on the spatial-block split, evaluated on the test and val windows; then the table.
#   bash experiments/outcrop_input.sh GENOTYPE.json OUT "0" "1" "2" "3 --unit-scale 4"
# Each scene argument is a seed and optional ggm-data synth options; its runs go to OUT/s<seed>. Rerunning
# resumes and skips finished steps. About 20 minutes per scene on 2 cores. SEED=N (default 0) is the training
# seed of both retrains; another seed than 0 writes retrain-<kind>-seedN and eval-<kind>-seedN beside them, and
# then averages the outcrop reader on the test windows (ggm-evaluate --tta / --members): eval-outcrop-tta and
# eval-outcrop-tta-seedN (each seed over 8 views), eval-outcrop-members (seeds 0 and N) and eval-outcrop-averaged
# (both).
set -euo pipefail
cd "$(dirname "$0")/.."
GENOTYPE=$1; OUT=$2; shift 2
SEED="${SEED:-0}"; suffix=""; [ "$SEED" = 0 ] || suffix="-seed$SEED"
export WANDB_MODE="${WANDB_MODE:-offline}" WANDB_SILENT=true
scenes=()
for scene in "$@"; do
  read -r seed synth <<<"$scene"
  dir="$OUT/s$seed"; scenes+=("$dir"); export WANDB_DIR="$dir"; mkdir -p "$dir"
  [ -f "$dir/raw/bouguer.nc" ] || ggm-data synth --out "$dir/raw" --seed "$seed" $synth
  [ -f "$dir/data-spatial-block/manifest.json" ] || ggm-data prepare --bouguer "$dir/raw/bouguer.nc" \
    --labels "$dir/raw/labels.nc" --bedrock "$dir/raw/bedrock.nc" --out "$dir/data-spatial-block" \
    --split spatial-block --seed "$seed"
  for kind in gravity outcrop; do
    recipe=experiments/retrain_cpu.yaml; [ "$kind" = outcrop ] && recipe=experiments/retrain_cpu_outcrop.yaml
    run="$dir/retrain-$kind$suffix"
    if [ ! -f "$run/summary.done" ]; then
      retrain --genotype "$GENOTYPE" --data "$dir/data-spatial-block" --out "$run" --config "$recipe" --seed "$SEED" \
        $( [ -f "$run/checkpoints/last.pt" ] && echo --resume ) && touch "$run/summary.done"
    fi
    for split in test val; do
      [ -f "$dir/eval-$kind$suffix/evaluation_$split.json" ] || ggm-evaluate --checkpoint "$run/checkpoints/best.pt" \
        --split "$split" --out "$dir/eval-$kind$suffix" > /dev/null
    done
  done
  first="$dir/retrain-outcrop/checkpoints/best.pt"
  if [ "$SEED" != 0 ] && [ -f "$first" ]; then
    [ -f "$dir/eval-outcrop-tta$suffix/evaluation_test.json" ] || ggm-evaluate --tta --split test \
      --checkpoint "$dir/retrain-outcrop$suffix/checkpoints/best.pt" --out "$dir/eval-outcrop-tta$suffix" > /dev/null
    for avg in tta members averaged; do
      flags=(); [ "$avg" = tta ] || flags+=(--members "$dir/retrain-outcrop$suffix/checkpoints/best.pt")
      [ "$avg" = members ] || flags+=(--tta)
      [ -f "$dir/eval-outcrop-$avg/evaluation_test.json" ] || ggm-evaluate --checkpoint "$first" "${flags[@]}" \
        --split test --out "$dir/eval-outcrop-$avg" > /dev/null
    done
  fi
done
if [ "$SEED" = 0 ]; then python experiments/outcrop_table.py "${scenes[@]}"; fi
