#!/usr/bin/env bash
# Set up (packages, configure, build) and run the main job on sample_data/.
set -euo pipefail
cd "$(dirname "$0")"
scripts/setup.sh
mkdir -p out
for f in sample_data/*.dcm sample_data/*.png; do
  [ -e "$f" ] || continue
  echo "== cxrvqa inspect $f"
  ./build/cxrvqa inspect "$f" --png "out/$(basename "${f%.*}").png"
done
echo "normalised images written to out/"
if [ -f model/cxrvqa-cxr-cnn.gguf ]; then
  echo "== cxrvqa score (default research model; not a diagnostic device, see model/MODEL_CARD.md)"
  ./build/cxrvqa score sample_data/*.dcm sample_data/*.png
fi
