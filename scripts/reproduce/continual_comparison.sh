#!/usr/bin/env bash
# The continual-learning comparison of docs/continual.md: the shipped recipe (tasks one after another with EWC and
# replay) beside joint training (all tasks at once, the same steps), each with two seeds, then the R matrices, ACC and
# BWT. The runs differ from train_default_model.sh only in --joint and --seed.
#   scripts/reproduce/continual_comparison.sh [OUT] [STEPS]
# Re-running resumes unfinished runs and skips finished ones; two runs at a time, one thread each.
set -euo pipefail
cd "$(dirname "$0")/../.."
OUT=${1:-work/continual}
STEPS=${2:-1500}
export OMP_NUM_THREADS=1
run() {  # NAME SEED [extra arguments]
  local name=$1 seed=$2; shift 2
  if [[ -f "$OUT/$name-$seed/training_summary.json" ]]; then echo "$name-$seed: done"; return; fi
  python training/train.py --data_root ../shared/data --objective fidelity --tasks IVF MIF MEF MFF --exclude_datasets TNO \
    --steps_per_task "$STEPS" --train_batch_size 2 --resolution 256 --learning_rate 1e-3 \
    --lr_scheduler cosine_per_task --lr_warmup_steps 50 --mixed_precision bf16 --eval_pairs 8 --eval_resolution 256 \
    --checkpointing_steps 500 --checkpoints_total_limit 2 --resume_from_checkpoint latest --no_progress \
    --seed "$seed" --output_dir "$OUT/$name-$seed" "$@" > "$OUT/$name-$seed.log" 2>&1
}
mkdir -p "$OUT"
run continual 0 --ewc_lambda 1000 --ewc_fisher_batches 8 --replay_per_task 64 --replay_share 0.25 &
run continual 1 --ewc_lambda 1000 --ewc_fisher_batches 8 --replay_per_task 64 --replay_share 0.25
wait
run joint 0 --joint &
run joint 1 --joint
wait
python scripts/reports/continual_report.py "$OUT"
