#!/usr/bin/env bash
# The whole pipeline on the synthetic default at a CPU-sized budget (README's first command runs this):
# synth -> prepare -> show -> nas-search -> nas-export -> retrain -> evaluate -> predict, then a summary.
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
  step "1/8 synthetic scene (E65-95, N40-55, 2 arc-minutes, 500 km margin)"
  ggm-data synth --out "$OUT/raw" --seed "$SEED"
fi
if [ ! -f "$OUT/data/manifest.json" ]; then
  step "2/8 residual anomaly and Table 2 windows"
  ggm-data prepare --bouguer "$OUT/raw/bouguer.nc" --labels "$OUT/raw/labels.nc" \
    --bedrock "$OUT/raw/bedrock.nc" --out "$OUT/data" --seed "$SEED"
fi
step "3/8 overview picture"
ggm-data show "$OUT/data" --out "$OUT/overview.png"

if [ ! -f "$OUT/genotype.json" ]; then
  step "4/8 architecture search (CPU recipe, depth 22)"
  nas-search --depth 22 --data "$OUT/data" --out "$OUT/search" --config experiments/search_cpu.yaml \
    --seed "$SEED" $( [ -d "$OUT/search/checkpoints" ] && echo --resume )
  step "5/8 export the genotype"
  nas-export "$OUT/genotype.json" --run "$OUT/search"
fi

step "6/8 retrain GGMNet (CPU recipe)"
retrain --genotype "$OUT/genotype.json" --data "$OUT/data" --out "$OUT/retrain" \
  --config experiments/retrain_cpu.yaml --seed "$SEED" $( [ -f "$OUT/retrain/checkpoints/last.pt" ] && echo --resume )

step "7/8 evaluate on the validation and test windows (outcrop, under cover, nearest-outcrop baseline)"
ggm-evaluate --checkpoint "$OUT/retrain/checkpoints/best.pt" --data "$OUT/data" --split val --out "$OUT/eval"
ggm-evaluate --checkpoint "$OUT/retrain/checkpoints/best.pt" --data "$OUT/data" --split test --out "$OUT/eval"

step "8/8 predict the Junggar Basin (E80-92, N43-48)"
ggm-predict --checkpoint "$OUT/retrain/checkpoints/best.pt" --bouguer "$OUT/raw/bouguer.nc" \
  --region 80,92,43,48 --labels "$OUT/raw/labels.nc" --out "$OUT/junggar"

step "summary"
python - "$OUT" "$start" <<'PY'
import json, sys, time
from pathlib import Path
out, start = Path(sys.argv[1]), float(sys.argv[2])
def pct(x):
    return "n/a" if x is None else f"{100 * x:.1f}"
for split in ("val", "test"):
    path = out / "eval" / f"evaluation_{split}.json"
    if not path.exists():
        continue
    ev = json.loads(path.read_text())
    o = ev.get("outcrop", {})
    line = f"{split:>4}: outcrop MPA {pct(o.get('mpa'))}%  FWIoU {pct(o.get('fwiou'))}%  mIoU {pct(o.get('miou'))}%"
    if ev.get("under_cover"):
        u, b = ev["under_cover"], ev.get("nearest_outcrop_baseline", {})
        line += (f" | under cover: model pixel acc {pct(u.get('pixel_accuracy'))}% vs nearest-outcrop "
                 f"baseline {pct(b.get('pixel_accuracy'))}%")
    print(line)
print(f"genotype: {out / 'genotype.json'}")
print(f"map:      {out / 'junggar' / 'prediction.png'}")
print(f"netCDF:   {out / 'junggar' / 'prediction.nc'}")
print(f"overview: {out / 'overview.png'}")
print(f"elapsed:  {(time.time() - start) / 60:.1f} min")
PY
