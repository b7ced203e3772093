#!/usr/bin/env bash
# The README's "fine-tune on your own pairs" recipe on TNO, an infrared-visible set the bundled model never saw (its
# training leaves TNO out): fine-tune on TNO's 17 training pairs (a folder of registered pairs, no labels), then
# compare with the bundled model on TNO's 25 test pairs (MI, VIF, Qabf, SSIM; the ledger's "reference" column is
# the bundled model there). --freeze_shared leaves every other task exactly as it was.
#   scripts/reproduce/fine_tune_tno.sh [OUT] [STEPS]
set -euo pipefail
cd "$(dirname "$0")/../.."
OUT=${1:-work/fine_tune_tno}
STEPS=${2:-600}
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-2}
/usr/bin/time -f "fine-tuning: %e s" accelerate launch --num_processes 1 --num_machines 1 --mixed_precision no \
  --dynamo_backend no training/train.py --init fusionfm/default_model --pairs IVF=../shared/data/IVF/TNO/train \
  --tasks IVF --freeze_shared --steps_per_task "$STEPS" --train_batch_size 2 --resolution 256 --learning_rate 1e-3 \
  --lr_warmup_steps 20 --mixed_precision bf16 --eval_pairs 0 --no_progress --seed 0 --output_dir "$OUT/model"
python scripts/reports/learning_ledger.py "$OUT/model" --reference fusionfm/default_model --split test --tasks IVF \
  --datasets TNO --out "$OUT/ledger"
