#!/usr/bin/env bash
# The benchmark tables of model_card.md and docs/benchmarks.md: the model on every test split of
# ../shared/data, ranked against the methods under each data set's priors/ and the built-in priors.
# Usage: scripts/reproduce/benchmark.sh [MODEL] [OUT]      (MODEL: folder or Hub id, default the bundled fusionfm/default_model)
set -euo pipefail
cd "$(dirname "$0")/../.."
MODEL=${1:-fusionfm/default_model}
OUT=${2:-work/benchmarks}
for task in IVF MIF MEF MFF; do
  python -m fusionfm.evaluate --model "$MODEL" --data ../shared/data --task "$task" --split test \
    --out "$OUT/$task" --no-progress
done
python scripts/reports/benchmark_report.py "$OUT"
