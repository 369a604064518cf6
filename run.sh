#!/usr/bin/env bash
# Set up (packages, configure, build) and run the main job on sample_data/:
# a radiologist's questions about each sample study (answer, evidence heatmap,
# DICOM SR, audit row), then the batch screening of the whole folder.
set -euo pipefail
cd "$(dirname "$0")"
scripts/setup.sh
OUT=out
mkdir -p "$OUT"
DB="$OUT/audit.sqlite"
echo "(research model trained on small public data: not a diagnostic device; see model/MODEL_CARD.md)"
for f in sample_data/*.dcm sample_data/*.png; do
  [ -e "$f" ] || continue
  b=$(basename "${f%.*}")
  echo "== cxrvqa inspect $f"
  ./build/cxrvqa inspect "$f" --png "$OUT/$b.png" | head -n 12
  echo "== cxrvqa ask $f \"Is there a pleural effusion?\""
  ./build/cxrvqa ask --db "$DB" --sr-out "$OUT/sr" --sr-html --heatmap "$OUT/$b.heatmap.png" "$f" "Is there a pleural effusion?"
  echo "== cxrvqa ask $f \"这张图像中是否存在气胸？\""
  ./build/cxrvqa ask --db "$DB" "$f" "这张图像中是否存在气胸？"
done
echo "== cxrvqa screen sample_data (2 workers)"
./build/cxrvqa screen --db "$DB" --sr-out "$OUT/sr" --jobs 2 --csv "$OUT/screen.csv" --jsonl "$OUT/screen.jsonl" sample_data
echo "== cxrvqa audit verify"
./build/cxrvqa audit verify --db "$DB"
echo "outputs in $OUT/: normalised images, heatmaps, SRs (+ HTML) in $OUT/sr, screen.csv, audit.sqlite"
