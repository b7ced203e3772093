#!/usr/bin/env bash
# Reproduce the bundled default model (fusionfm/default_model/) from the data alone, with one command:
#   scripts/reproduce/train_default_model.sh [WORK_DIR] [SEED]
# accelerate launch training/train.py with the fidelity objective (it needs no labels: each task's training pairs,
# and synthetic pairs for MEF and MFF, are scored against the model's start by differentiable MI, VIF, Qabf and
# SSIM, MEF-SSIM and the truth; docs/quality.md), the four tasks one after another with EWC and replay, 1,500 steps
# each of two 256x256 crops, bf16 autocast, one thread; TNO's training pairs are left out (they show fine-tuning on a
# set the model has not seen, README); then the run's pipeline is copied into the package unchanged
# (bundle_model.py checks its weights against the fingerprint the run recorded). Re-running resumes from the latest
# checkpoint. About an hour on 2 CPU cores beside another run.
set -euo pipefail
cd "$(dirname "$0")/../.."
WORK=${1:-work/default_model}
SEED=${2:-0}
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}
accelerate launch --num_processes 1 --num_machines 1 --mixed_precision no --dynamo_backend no training/train.py \
  --data_root ../shared/data --objective fidelity --tasks IVF MIF MEF MFF --exclude_datasets TNO --steps_per_task 1500 \
  --train_batch_size 2 --resolution 256 --learning_rate 1e-3 --lr_scheduler cosine_per_task --lr_warmup_steps 50 \
  --mixed_precision bf16 --ewc_lambda 1000 --ewc_fisher_batches 8 --replay_per_task 64 --replay_share 0.25 \
  --eval_pairs 8 --eval_resolution 256 --checkpointing_steps 500 --checkpoints_total_limit 2 \
  --resume_from_checkpoint latest --no_progress --seed "$SEED" --output_dir "$WORK/run"
python scripts/reproduce/bundle_model.py "$WORK/run"
