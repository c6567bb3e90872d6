#!/usr/bin/env bash
# The whole pipeline on the synthetic default at a CPU-sized budget (README's first command runs this):
# synth -> prepare (the paper's random split and the spatial-block split) -> show -> nas-search -> nas-export
# -> retrain on each split, and reading the outcrop too -> evaluate -> predict, then a summary
# (ggmnet.studies.demo_summary). The search uses torch's default threads; the three retrains, then the
# evaluations, run side by side with one CPU thread each (a run is repeatable at a given thread count), their
# output in $OUT/logs. Outputs go to $OUT (default runs/quickstart). Rerunning resumes: finished steps are skipped.
set -euo pipefail
cd "$(dirname "$0")/.."
OUT="${OUT:-runs/quickstart}"
SEED="${SEED:-0}"
export WANDB_MODE="${WANDB_MODE:-offline}" WANDB_SILENT=true WANDB_DIR="$OUT"
mkdir -p "$OUT/logs"
start=$(date +%s)
step() { local t=$(( $(date +%s) - start )); printf '\n== [%d:%02d] %s ==\n' $((t / 60)) $((t % 60)) "$*"; }

# side NAME CMD...: run CMD in the background on one CPU thread, its output in $OUT/logs/NAME.log;
# settle: wait for them all, print each one's last line (or its log's end if it failed) and stop on a failure.
names=() pids=()
trap 'kill $(jobs -pr) 2>/dev/null || true' EXIT
side() { local name=$1; shift; OMP_NUM_THREADS=1 "$@" > "$OUT/logs/$name.log" 2>&1 & names+=("$name"); pids+=($!); }
settle() {
  local i failed=0
  for i in "${!pids[@]}"; do
    if wait "${pids[$i]}"; then
      printf '%-22s %s\n' "${names[$i]}:" "$(tail -n 1 "$OUT/logs/${names[$i]}.log")"
    else
      failed=1; printf '%s failed (%s):\n' "${names[$i]}" "$OUT/logs/${names[$i]}.log" >&2
      tail -n 5 "$OUT/logs/${names[$i]}.log" >&2
    fi
  done
  names=() pids=()
  return $failed
}

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

step "6/10 retrain GGMNet (CPU recipe) on each split, and on the spatial-block split reading the outcrop too"
# The outcrop readers take the outcrop geology beside the gravity: trained to fill outcrop hidden under the cover
# of another part of the map, so that they fill the real cover from the outcrop around it. Two training seeds,
# whose probabilities are averaged (with the eight flips and turns of each tile) for the map and its uncertainty.
retrain_in() {  # retrain_in NAME DATA RECIPE SEED
  side "retrain-$1" retrain --genotype "$OUT/genotype.json" --data "$OUT/$2" --out "$OUT/retrain-$1" \
    --config "experiments/$3" --seed "$4" $( [ -f "$OUT/retrain-$1/checkpoints/last.pt" ] && echo --resume )
}
retrain_in random data-random retrain_cpu.yaml "$SEED"
retrain_in spatial-block data-spatial-block retrain_cpu.yaml "$SEED"
retrain_in outcrop data-spatial-block retrain_cpu_outcrop.yaml "$SEED"
retrain_in outcrop-member2 data-spatial-block retrain_cpu_outcrop.yaml $((SEED + 1))
settle

step "7/10 evaluate: validation windows of both splits, test windows (mostly cover) of the spatial-block models"
best() { echo "$OUT/retrain-$1/checkpoints/best.pt"; }
pair=(--checkpoint "$(best outcrop)" --members "$(best outcrop-member2)" --tta)
evaluate() {  # evaluate NAME SPLIT DATA CHECKPOINT-FLAGS...  (--data named: the folder may have been moved)
  local name=$1 split=$2 data=$3; shift 3
  side "eval-$name-$split" ggm-evaluate "$@" --data "$OUT/$data" --split "$split" --out "$OUT/eval-$name"
}
evaluate random val data-random --checkpoint "$(best random)"
evaluate spatial-block val data-spatial-block --checkpoint "$(best spatial-block)"
settle
evaluate spatial-block test data-spatial-block --checkpoint "$(best spatial-block)"
evaluate outcrop test data-spatial-block --checkpoint "$(best outcrop)"
settle
evaluate outcrop-averaged test data-spatial-block "${pair[@]}"

step "8/10 the same test windows' cover by its thickness, which the synthetic scene knows"
side cover-depth python experiments/cover_depth.py --checkpoint "$(best spatial-block)" \
  --data "$OUT/data-spatial-block" --scene "$OUT/raw" --split test --out "$OUT/eval-spatial-block/cover_depth.json"
settle

step "9/10 predict the Junggar Basin (E80-92, N43-48): its cover filled by the two outcrop readers, averaged"
side predict ggm-predict "${pair[@]}" --bouguer "$OUT/raw/bouguer.nc" --region 80,92,43,48 \
  --labels "$OUT/raw/labels.nc" --out "$OUT/junggar"
settle

step "10/10 summary"
python -m ggmnet.studies.demo_summary "$OUT" "$start"
