#!/usr/bin/env bash
# The whole pipeline on the synthetic default at a CPU-sized budget (README's first command runs this):
# synth -> prepare (the paper's random split and the spatial-block split) -> show -> nas-search -> nas-export
# -> retrain on each split, and reading the outcrop too -> evaluate -> predict, then a summary. About 20 minutes
# on two CPU cores (13-15 measured before the outcrop-reading retrain was added; not re-timed since).
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
python - "$OUT" "$start" <<'PY'
import json, sys, time
from pathlib import Path
out, start = Path(sys.argv[1]), float(sys.argv[2])

def pct(x):
    return "n/a" if x is None else f"{100 * x:.1f}%"

def load(folder, split):
    path = out / folder / f"evaluation_{split}.json"
    return json.loads(path.read_text()) if path.exists() else None

paper, blocks, test = load("eval-random", "val"), load("eval-spatial-block", "val"), load("eval-spatial-block", "test")
if paper:
    o, c = paper["outcrop"], paper["commonest_class"]
    print(f"paper's random split, val outcrop:   MPA {pct(o['mpa'])}  FWIoU {pct(o['fwiou'])}  pixel acc "
          f"{pct(o['pixel_accuracy'])}   (commonest class: FWIoU {pct(c['fwiou'])}; its val windows overlap "
          "training windows)")
if blocks:
    o, c = blocks["outcrop"], blocks["commonest_class"]
    ratio = o["fwiou"] / c["fwiou"] if c["fwiou"] else float("nan")
    print(f"spatial-block split, val outcrop:    MPA {pct(o['mpa'])}  FWIoU {pct(o['fwiou'])}  pixel acc "
          f"{pct(o['pixel_accuracy'])}   (commonest class: FWIoU {pct(c['fwiou'])}, {ratio:.1f}x less)")
outcrop = load("eval-outcrop", "test")
if test and test.get("under_cover"):
    u, c, n = test["under_cover"], test["commonest_class_under_cover"], test["nearest_outcrop_baseline"]
    f = test.get("outcrop_prior_under_cover") or {}
    o = (outcrop or {}).get("under_cover") or {}
    print(f"under the cover, test windows:       pixel acc {pct(u['pixel_accuracy'])} from gravity, "
          f"{pct(f.get('pixel_accuracy'))} with the outcrop prior, {pct(o.get('pixel_accuracy'))} reading the "
          f"outcrop   (commonest class {pct(c['pixel_accuracy'])}, nearest outcrop {pct(n['pixel_accuracy'])})")
if outcrop and outcrop.get("calibration") and outcrop["calibration"].get("under_cover"):
    cal = outcrop["calibration"]
    raw, fit = cal["under_cover"]["raw"], cal["under_cover"]["calibrated"]
    auroc = fit["entropy_error_auroc"]
    print(f"  its probabilities under the cover: ECE {pct(raw['ece'])}, {pct(fit['ece'])} at temperature "
          f"{cal['temperature']:.2f} (fitted on hidden val outcrop); entropy ranks its errors with AUROC "
          + ("n/a" if auroc is None else f"{auroc:.2f}"))
depth = out / "eval-spatial-block" / "cover_depth.json"
if depth.exists():
    rows = json.loads(depth.read_text())["rows"]
    print("  by cover thickness (gravity, with prior; commonest, nearest): " + "; ".join(
        f"{r['bin']} {pct(r['under_cover'])}, {pct(r.get('outcrop_prior_under_cover'))} "
        f"({pct(r['commonest_class_under_cover'])}, {pct(r['nearest_outcrop_baseline'])})" for r in rows))
print(f"genotype: {out / 'genotype.json'}")
print(f"map:      {out / 'junggar' / 'prediction.png'}")
print(f"netCDF:   {out / 'junggar' / 'prediction.nc'}")
print(f"overview: {out / 'overview.png'}")
print(f"elapsed:  {(time.time() - start) / 60:.1f} min")
PY
