#!/usr/bin/env bash
# The continual-learning comparison of docs/continual.md: naive sequential, EWC only, replay only,
# EWC + replay and joint training, the same steps for each (4 tasks x STEPS steps of batch 8).
# Usage: scripts/reproduce/continual_comparison.sh LABELS_DIR OUT_DIR [STEPS]
#   LABELS_DIR holds IVF-train, MIF-train, MEF-train, MFF-train (python -m fusionfm.pseudolabel outputs).
# Re-running resumes unfinished runs from their latest checkpoint and skips finished ones.
set -euo pipefail
LABELS=${1:?labels folder}
OUT=${2:?output folder}
STEPS=${3:-300}
cd "$(dirname "$0")/../.."
COMMON=(--data_root ../shared/data
        --labels "IVF=$LABELS/IVF-train" "MIF=$LABELS/MIF-train" "MEF=$LABELS/MEF-train" "MFF=$LABELS/MFF-train"
        --tasks IVF MIF MEF MFF --steps_per_task "$STEPS" --train_batch_size 8 --resolution 128
        --learning_rate 1e-3 --lr_scheduler constant_with_warmup --lr_warmup_steps 50
        --eval_pairs 8 --eval_resolution 256 --checkpointing_steps "$STEPS" --checkpoints_total_limit 1
        --no_save_each_task --resume_from_checkpoint latest --no_progress --seed 0)
declare -A VARIANTS=(
  [naive]="--ewc_lambda 0 --replay_per_task 0"
  [ewc]="--ewc_lambda 20000 --ewc_fisher_batches 4 --replay_per_task 0"
  [replay]="--ewc_lambda 0 --replay_per_task 64 --replay_share 0.25"
  [ewc_replay]="--ewc_lambda 20000 --ewc_fisher_batches 4 --replay_per_task 64 --replay_share 0.25"
  [joint]="--joint"
)
for name in naive ewc replay ewc_replay joint; do
  if [[ -f "$OUT/$name/training_summary.json" ]]; then echo "$name: done"; continue; fi
  # shellcheck disable=SC2086
  /usr/bin/time -f "$name: %e s" python training/train.py "${COMMON[@]}" ${VARIANTS[$name]} --output_dir "$OUT/$name"
done
python scripts/reports/continual_report.py "$OUT"
