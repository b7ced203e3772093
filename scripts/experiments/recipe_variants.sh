#!/usr/bin/env bash
# Recipe variants of issue 14, each trained with the default recipe plus its own flags, scored on the validation
# split (R[i][j] in OUT/<variant>/continual.csv, the benchmark-aligned score). Resumable; one thread per run.
# Environment: CHECKPOINT_STEPS (default 500), LR_SCHEDULER (default constant_with_warmup; cosine decays to 0 at
# the last step, the schedule for a fixed time budget).
# Usage: scripts/experiments/recipe_variants.sh LABELS_DIR OUT_DIR STEPS_PER_TASK SEED VARIANT [VARIANT ...]
#   variants: weight, pyramid, weight_endpoint, pyramid_endpoint, pyramid_smooth, pyramid_smooth_endpoint, and the same with a joint_ prefix (all tasks at
#   once instead of in sequence; same total steps)
set -euo pipefail
LABELS=${1:?labels folder}; OUT=${2:?output folder}; STEPS=${3:?steps per task}; SEED=${4:?seed}; shift 4
cd "$(dirname "$0")/../.."
COMMON=(--data_root ../shared/data
        --labels "IVF=$LABELS/IVF-train" "MIF=$LABELS/MIF-train" "MEF=$LABELS/MEF-train" "MFF=$LABELS/MFF-train"
        --tasks IVF MIF MFF MEF --steps_per_task "$STEPS" --train_batch_size 8 --resolution 128
        --learning_rate 1e-3 --lr_scheduler "${LR_SCHEDULER:-constant_with_warmup}" --lr_warmup_steps 100 --mixed_precision bf16
        --gradient_loss_weight 1 --ewc_lambda 2000 --ewc_fisher_batches 4 --replay_per_task 64 --replay_share 0.25
        --eval_resolution 256 --checkpointing_steps "${CHECKPOINT_STEPS:-500}" --resume_from_checkpoint latest
        --no_progress --no_save_each_task --seed "$SEED")
for variant in "$@"; do
  JOINT=(); base=$variant
  if [[ $variant == joint_* ]]; then JOINT=(--joint); base=${variant#joint_}; fi
  case "$base" in
    weight) EXTRA=(--unet_preset weight) ;;
    pyramid) EXTRA=(--unet_config scripts/experiments/configs/pyramid_head.json) ;;
    weight_endpoint) EXTRA=(--unet_preset weight --endpoint_loss_weight 1) ;;
    pyramid_endpoint) EXTRA=(--unet_config scripts/experiments/configs/pyramid_head.json --endpoint_loss_weight 1) ;;
    pyramid_smooth) EXTRA=(--unet_config scripts/experiments/configs/pyramid_smooth.json) ;;
    pyramid_smooth_endpoint) EXTRA=(--unet_config scripts/experiments/configs/pyramid_smooth.json --endpoint_loss_weight 1) ;;
    *) echo "unknown variant $variant" >&2; exit 2 ;;
  esac
  if [ -f "$OUT/$variant-s$SEED/training_summary.json" ]; then echo "$variant-s$SEED done"; continue; fi
  OMP_NUM_THREADS=1 python training/train.py "${COMMON[@]}" "${EXTRA[@]}" "${JOINT[@]}" --output_dir "$OUT/$variant-s$SEED"
done
