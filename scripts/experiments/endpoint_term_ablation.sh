#!/usr/bin/env bash
# Ablation of the endpoint objectives (issue 14, item 2): the session-9 recipe (pyramid head without the activity
# prior, joint, 375 steps per task = the 15-minute budget, cosine LR, labels + all endpoint terms) with every term,
# and without each of intensity, gradient and structure. Scores: R in OUT/<variant>-s<SEED>/continual.csv (the
# validation split's benchmark-aligned score). Resumable; one thread per run, two runs at a time.
# Usage: scripts/experiments/endpoint_term_ablation.sh LABELS_DIR OUT_DIR SEED
set -euo pipefail
LABELS=${1:?labels folder (the pseudo-labels of train_default_model.sh step 1)}; OUT=${2:?output folder}
SEED=${3:?seed}
cd "$(dirname "$0")/../.."
run() {  # $1 = variant name, the rest = the endpoint terms kept
  local name=$1; shift
  if [ -f "$OUT/$name-s$SEED/training_summary.json" ]; then echo "$name-s$SEED done"; return; fi
  OMP_NUM_THREADS=1 python training/train.py --data_root ../shared/data \
    --labels "IVF=$LABELS/IVF-train" "MIF=$LABELS/MIF-train" "MEF=$LABELS/MEF-train" "MFF=$LABELS/MFF-train" \
    --tasks IVF MIF MFF MEF --joint --steps_per_task 375 --train_batch_size 8 --resolution 128 \
    --learning_rate 1e-3 --lr_scheduler cosine --lr_warmup_steps 100 --mixed_precision bf16 \
    --gradient_loss_weight 1 --ewc_lambda 2000 --ewc_fisher_batches 4 --replay_per_task 64 --replay_share 0.25 \
    --eval_resolution 256 --checkpointing_steps 500 --resume_from_checkpoint latest --no_progress \
    --no_save_each_task --seed "$SEED" --unet_preset pyramid --endpoint_loss_weight 1 --endpoint_terms "$@" \
    --output_dir "$OUT/$name-s$SEED" > "$OUT/$name-s$SEED.log" 2>&1
}
mkdir -p "$OUT"
{ run all intensity gradient structure; run no_gradient intensity structure; } &
{ run no_structure intensity gradient; run no_intensity gradient structure; } &
wait
