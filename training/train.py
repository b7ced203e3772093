#!/usr/bin/env python
"""Train FusionFM: the fusion tasks one after another, with EWC and experience replay.

    accelerate launch training/train.py --data_root ../shared/data --tasks IVF MIF MEF MFF \\
        --steps_per_task 1000 --ewc_lambda 1000 --replay_per_task 64 --output_dir runs/fusionfm

The default objective (``--objective fidelity``) needs no labels: each one-step fusion of a training pair is scored
against the model's start by differentiable fidelity metrics (MI, VIF, Qabf, SSIM per source; MEF-SSIM for exposure
pairs; the truth of synthetic pairs), :func:`fusionfm.training.losses.fidelity_loss`. ``--objective labels`` trains
by flow matching to pseudo-labels (``--labels TASK=DIR``, from ``python -m fusionfm.pseudolabel``). ``--init MODEL``
fine-tunes a trained pipeline.

Also runs as ``python training/train.py`` and as ``accelerate launch --multi_gpu --num_processes 2`` (gloo on
a CPU machine, NCCL on GPUs). Each step: random crops of the current task (plus replayed samples of earlier
tasks), the objective plus the EWC penalty. After each task: its Fisher into EWC, its replay quota, one
row of the quality matrix R, the pipeline saved. ``--joint`` trains on all tasks at once (the upper bound).
Checkpoints (:mod:`fusionfm.training.checkpoints`) are pickle-free and atomic; randomness derives from (seed,
process, step), so a resumed run draws the same batches as an uninterrupted one.
"""

from __future__ import annotations

import argparse
import functools
import gc
import importlib.util
import json
import logging
import math
import sys
import time
from pathlib import Path

import torch
from accelerate import Accelerator
from accelerate.utils import gather_object, set_seed
from diffusers.optimization import get_scheduler
from tqdm.auto import tqdm

from fusionfm import FlowMatchFusionScheduler, FusionFMPipeline, build_unet, get_task
from fusionfm.atomic import write_text_atomic
from fusionfm.evaluation.validation import SPLIT_FILE, validation_keys, validation_pairs, validation_quality
from fusionfm.hub import push_folder_to_hub
from fusionfm.scheduler import COUPLINGS, TIME_SAMPLINGS
from fusionfm.tasks import FAMILIES
from fusionfm.training import checkpoints
from fusionfm.training.checkpoints import TrainingState
from fusionfm.training.continual import ElasticWeightConsolidation, ReplayBuffer, diagonal_fisher
from fusionfm.training.datasets import LabelledPairs, SourcePairs, parse_label_folders
from fusionfm.training.export import save_final_pipeline, save_pipeline
from fusionfm.training.logs import CsvLog, quality_markdown, write_quality_csv
from fusionfm.training.losses import DEFAULT_ENDPOINT_TERMS, ENDPOINT_TERMS, fidelity_loss, fusion_loss
from fusionfm.training.model_card import render_model_card
from fusionfm.training.sampler import BatchSampler, step_generator

logger = logging.getLogger("fusionfm.train")


# ---------------------------------------------------------------------------------------------- arguments
def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    data = parser.add_argument_group("data")
    data.add_argument("--data_root", type=Path, default=None,
                      help="shared/data folder: real sources of the labels and the test pairs for evaluation.")
    data.add_argument("--objective", choices=["fidelity", "labels"], default=None,
                      help="fidelity (default without --labels): the unsupervised fidelity objective on the training "
                           "pairs of --data_root or --pairs (fusionfm.training.losses.FIDELITY_OBJECTIVES; no labels "
                           "needed); labels (default with --labels): flow matching to pseudo-labels")
    data.add_argument("--labels", nargs="+", default=None, metavar="TASK=DIR",
                      help="pseudo-label folder per task (written by python -m fusionfm.pseudolabel), for "
                           "--objective labels")
    data.add_argument("--pairs", nargs="+", default=None, metavar="TASK=DIR",
                      help="--objective fidelity on your own registered pairs instead of --data_root's training "
                           "split: a folder per task in the layouts of python -m fusionfm.fuse (<stem>_ir.png + "
                           "<stem>_vi.png, or ir/ + vi/); no labels needed")
    data.add_argument("--exclude_datasets", nargs="+", default=[],
                      help="data sets of --data_root's training split to leave out (e.g. TNO, to fine-tune on later)")
    data.add_argument("--tasks", nargs="+", default=None,
                      help="task order (default: the --labels order, else IVF MIF MEF MFF). Families: IVF MIF MEF MFF.")
    data.add_argument("--resolution", type=int, default=128, help="side of the square training crops")
    data.add_argument("--no_flip", action="store_true", help="no random left-right flips")

    model = parser.add_argument_group("model")
    model.add_argument("--init", default=None,
                       help="start from this pipeline's U-Net (a folder or Hub id; to fine-tune a trained model) "
                            "instead of a fresh --unet_preset")
    model.add_argument("--freeze_shared", action="store_true",
                       help="train only the --tasks' own parameters (their class embedding, gates, activity strengths "
                            "and gains); every other task's fusions stay exactly as they were (fine-tuning one task "
                            "without the others' data)")
    model.add_argument("--unet_preset", default="default",
                       help="default or tiny (fusionfm.unet.UNET_PRESETS)")
    model.add_argument("--unet_config", type=Path, default=None, help="JSON file of FusionUNet config overrides")
    model.add_argument("--coupling", choices=COUPLINGS, default="mean")
    model.add_argument("--time_sampling", choices=TIME_SAMPLINGS, default="uniform")
    model.add_argument("--start_share", type=float, default=None,
                       help="share of each batch trained at t = 0, the point one-step inference uses (default: 0.75 "
                            "for --objective fidelity, 0 for labels)")
    model.add_argument("--gradient_loss_weight", type=float, default=0.0,
                       help="weight of the image-gradient term of the loss (0: plain flow matching)")
    model.add_argument("--endpoint_loss_weight", type=float, default=0.0,
                       help="scale of the per-task endpoint objectives (fusionfm.training.losses; 0: off)")
    model.add_argument("--label_loss_weight", type=float, default=1.0,
                       help="weight of the pseudo-label (flow matching and edge) terms; 0 trains on the endpoint "
                            "objectives alone")
    model.add_argument("--endpoint_terms", nargs="+", choices=ENDPOINT_TERMS, default=list(DEFAULT_ENDPOINT_TERMS),
                       help="which endpoint objectives to use (default: intensity, gradient, structure; fewer for "
                            "the per-term ablation; edges is opt-in)")

    optim = parser.add_argument_group("optimisation")
    optim.add_argument("--train_batch_size", type=int, default=8, help="per process")
    optim.add_argument("--steps_per_task", type=int, default=1000)
    optim.add_argument("--joint", action="store_true",
                       help="train on all tasks at once (same total steps; no EWC or replay)")
    optim.add_argument("--learning_rate", type=float, default=1e-3)
    optim.add_argument("--lr_scheduler", default="cosine_per_task",
                       choices=["constant", "constant_with_warmup", "linear", "cosine", "cosine_per_task"],
                       help="cosine_per_task: one cosine decay over each task's steps (over all of them with --joint), "
                            "so a later task does not learn at the tail of an earlier one's schedule")
    optim.add_argument("--lr_warmup_steps", type=int, default=100)
    optim.add_argument("--adam_weight_decay", type=float, default=1e-4)
    optim.add_argument("--adam_epsilon", type=float, default=1e-8,
                       help="Adam's epsilon; above the gradients' noise it makes tiny gradients take tiny steps "
                            "(Adam otherwise moves every weight by about the learning rate)")
    optim.add_argument("--max_grad_norm", type=float, default=1.0)
    optim.add_argument("--mixed_precision", choices=["no", "bf16", "fp16"], default="bf16")
    optim.add_argument("--seed", type=int, default=0)
    optim.add_argument("--cpu", action="store_true", help="train on the CPU even when a GPU is present")

    continual = parser.add_argument_group("continual learning")
    continual.add_argument("--ewc_lambda", type=float, default=0.0, help="EWC strength (0: off)")
    continual.add_argument("--ewc_fisher_batches", type=int, default=4, help="batches per process for the Fisher")
    continual.add_argument("--ewc_decay", type=float, default=1.0, help="online EWC: weight of the old Fisher")
    continual.add_argument("--replay_per_task", type=int, default=0, help="samples kept per finished task (0: off)")
    continual.add_argument("--replay_share", type=float, default=0.25, help="share of each batch replayed")

    evaluation = parser.add_argument_group("evaluation")
    evaluation.add_argument("--validation_split", type=Path, default=SPLIT_FILE,
                            help="CSV of validation pairs: left out of training, scored for R[i][j]")
    evaluation.add_argument("--eval_pairs", type=int, default=None,
                            help="validation pairs per task for R[i][j] (default: all; 0: skip)")
    evaluation.add_argument("--eval_resolution", type=int, default=256, help="long side of the validation pairs")

    output = parser.add_argument_group("output")
    output.add_argument("--output_dir", type=Path, required=True)
    output.add_argument("--checkpointing_steps", type=int, default=500)
    output.add_argument("--checkpoints_total_limit", type=int, default=None)
    output.add_argument("--resume_from_checkpoint", default=None, help='a checkpoint folder or "latest"')
    output.add_argument("--logging_steps", type=int, default=10)
    output.add_argument("--report_to", choices=["csv", "tensorboard"], default="csv",
                        help="CSV is always written; tensorboard in addition when it is installed")
    output.add_argument("--no_save_each_task", action="store_true", help="save the pipeline only at the end")
    output.add_argument("--push_to_hub", action="store_true")
    output.add_argument("--hub_model_id", default=None)
    output.add_argument("--hub_token", default=None)
    output.add_argument("--no_progress", action="store_true")
    args = parser.parse_args(argv)

    if args.objective is None:
        args.objective = "labels" if args.labels else "fidelity"
    if args.objective == "labels" and not args.labels:
        parser.error("--objective labels needs --labels TASK=DIR for every task.")
    try:
        args.labels = parse_label_folders(args.labels or [])
        args.pairs = parse_label_folders(args.pairs or [], "--pairs")
        args.tasks = [get_task(task).family for task in (args.tasks or list(args.labels) or list(args.pairs)
                                                         or list(FAMILIES))]
    except ValueError as error:
        parser.error(str(error))
    missing = [task for task in args.tasks if task not in args.labels]
    if args.objective == "labels" and missing:
        parser.error(f"no --labels folder for {', '.join(missing)}; give TASK=DIR for every task in --tasks.")
    if args.start_share is None:
        args.start_share = 0.75 if args.objective == "fidelity" else 0.0
    if args.objective == "fidelity" and args.data_root is None and any(task not in args.pairs for task in args.tasks):
        parser.error("--objective fidelity trains on the pairs of --data_root (or of --pairs TASK=DIR); pass them.")
    if len(set(args.tasks)) != len(args.tasks):
        parser.error(f"--tasks lists a task twice: {args.tasks}.")
    for name in ("resolution", "train_batch_size", "steps_per_task", "checkpointing_steps", "logging_steps"):
        if getattr(args, name) < 1:
            parser.error(f"--{name} must be >= 1.")
    if not 0 <= args.replay_share < 1:
        parser.error("--replay_share must be in [0, 1).")
    if args.push_to_hub and not args.hub_model_id:
        parser.error("--push_to_hub needs --hub_model_id.")
    if args.eval_pairs and args.data_root is None:
        parser.error("evaluation needs --data_root (or pass --eval_pairs 0).")
    return args


def cosine_per_task(optimizer: torch.optim.Optimizer, warmup_steps: int,
                    steps_per_task: int) -> torch.optim.lr_scheduler.LambdaLR:
    """A linear warm-up over the first ``warmup_steps``, then a cosine decay to 0 over every task's steps."""

    def factor(step: int) -> float:
        warm_up = min(1.0, (step + 1) / warmup_steps) if warmup_steps else 1.0
        return warm_up * 0.5 * (1 + math.cos(math.pi * (step % steps_per_task) / steps_per_task))

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


def run_config(args: argparse.Namespace) -> dict:
    """The arguments as JSON values (checkpoints and the model card keep them)."""
    config = {key: str(value) if isinstance(value, Path) else value for key, value in vars(args).items()}
    return config | {key: {task: str(folder) for task, folder in getattr(args, key).items()}
                     for key in ("labels", "pairs")}


def model_card(args: argparse.Namespace, state: TrainingState, num_processes: int, load_from: str):
    settings = run_config(args) | {"num_processes": num_processes}
    return render_model_card(settings, state.step, state.quality, state.stage_names, load_from)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    tensorboard = args.report_to == "tensorboard" and importlib.util.find_spec("tensorboard") is not None
    accelerator = Accelerator(cpu=args.cpu or not torch.cuda.is_available(), mixed_precision=args.mixed_precision,
                              log_with="tensorboard" if tensorboard else None,
                              project_dir=str(args.output_dir / "logs"))
    logging.basicConfig(format="%(asctime)s %(levelname)s %(name)s: %(message)s", level=logging.INFO)
    if args.report_to == "tensorboard" and not tensorboard and accelerator.is_main_process:
        logger.warning("tensorboard is not installed; logging to CSV only (pip install tensorboard).")
    set_seed(args.seed)
    rank, main_process = accelerator.process_index, accelerator.is_main_process
    if main_process:
        args.output_dir.mkdir(parents=True, exist_ok=True)

    try:
        held_out = validation_keys(split_file=args.validation_split)
        if args.objective == "labels":
            datasets = {task: LabelledPairs(args.labels[task], args.data_root, task, exclude=held_out)
                        for task in args.tasks}
        else:
            datasets = {task: SourcePairs(args.data_root, task, exclude=held_out, folder=args.pairs.get(task),
                                          exclude_datasets=set(args.exclude_datasets)) for task in args.tasks}
        eval_sets = ({task: validation_pairs(args.data_root, task, args.eval_resolution, args.eval_pairs,
                                             args.validation_split) for task in args.tasks}
                     if args.eval_pairs != 0 and main_process else {})
    except (FileNotFoundError, ValueError) as error:
        raise SystemExit(f"error: {error}") from None
    if main_process:
        logger.info("Training pairs: %s", ", ".join(f"{t} {len(d)}" for t, d in datasets.items()))

    if args.init:
        model = FusionFMPipeline.from_pretrained(args.init).unet.to(memory_format=torch.contiguous_format)
    else:
        overrides = json.loads(args.unet_config.read_text()) if args.unet_config else {}
        model = build_unet(args.unet_preset, **overrides)
    scheduler = FlowMatchFusionScheduler(coupling=args.coupling, time_sampling=args.time_sampling,
                                         start_share=args.start_share)
    if args.freeze_shared:
        parameters = model.train_only_tasks([get_task(task).class_id for task in args.tasks])
        optimizer = torch.optim.AdamW(parameters, lr=args.learning_rate, weight_decay=0.0, eps=args.adam_epsilon)
    else:
        optimizer = torch.optim.AdamW(model.parameters(), lr=args.learning_rate, weight_decay=args.adam_weight_decay,
                                      eps=args.adam_epsilon)
    stages = 1 if args.joint else len(args.tasks)
    total_steps = args.steps_per_task * len(args.tasks)
    if args.lr_scheduler == "cosine_per_task":
        lr_scheduler = cosine_per_task(optimizer, args.lr_warmup_steps, total_steps // stages)
    else:
        lr_scheduler = get_scheduler(args.lr_scheduler, optimizer, num_warmup_steps=args.lr_warmup_steps,
                                     num_training_steps=total_steps)
    # The LR schedule is stepped by hand once per optimisation step (not through accelerate, which
    # would step it once per process).
    model, optimizer = accelerator.prepare(model, optimizer)
    unwrapped = accelerator.unwrap_model(model)
    ewc = ElasticWeightConsolidation(0.0 if args.joint else args.ewc_lambda, args.ewc_decay)
    replay = ReplayBuffer(0 if args.joint else args.replay_per_task)
    state, resumed_from = TrainingState(), None
    if args.resume_from_checkpoint:
        try:
            folder = checkpoints.resolve_resume(args.output_dir, args.resume_from_checkpoint)
        except ValueError as error:
            raise SystemExit(f"error: {error}") from None
        if folder is None:
            logger.info("No checkpoint in %s yet; starting from scratch.", args.output_dir)
        else:
            state = checkpoints.load_checkpoint(folder, unwrapped, optimizer, lr_scheduler, ewc, replay)
            resumed_from = {"checkpoint": folder.name, "step": state.step}
            logger.info("Resumed from %s at step %d.", folder, state.step)
    log = CsvLog(args.output_dir / "logs" / "train_log.csv", state.step) if main_process else None
    if accelerator.log_with:
        accelerator.init_trackers("fusionfm", config={k: str(v) for k, v in vars(args).items()})

    sampler = BatchSampler(datasets, replay, scheduler, args.resolution, flip=not args.no_flip,
                           gain_shifts_for=unwrapped.gain_shifts_for)
    if args.objective == "labels":
        loss_function = functools.partial(fusion_loss, gradient_weight=args.gradient_loss_weight,
                                          endpoint_weight=args.endpoint_loss_weight,
                                          use_terms=tuple(args.endpoint_terms), label_weight=args.label_loss_weight)
    else:
        loss_function = fidelity_loss
    steps_per_stage = total_steps // stages
    progress = tqdm(range(total_steps), initial=state.step, desc="Training",
                    disable=args.no_progress or not main_process)
    first_step_losses, started, seconds_before = None, time.perf_counter(), state.seconds
    model.train()
    while state.step < total_steps:
        stage = state.step // steps_per_stage
        tasks = list(args.tasks) if args.joint else [args.tasks[stage]]
        share = 0.0 if args.joint else args.replay_share
        batch, replayed = sampler.draw(tasks, args.train_batch_size, step_generator(args.seed, rank, state.step), share)
        batch = {key: value.to(accelerator.device) for key, value in batch.items()}
        with accelerator.autocast():
            flow_loss = loss_function(model, batch).mean()
        penalty = ewc.penalty(unwrapped)
        loss = flow_loss + penalty
        accelerator.backward(loss)
        if accelerator.sync_gradients and args.max_grad_norm > 0:
            accelerator.clip_grad_norm_(model.parameters(), args.max_grad_norm)
        optimizer.step()
        lr_scheduler.step()
        optimizer.zero_grad(set_to_none=True)
        state.step += 1
        state.seconds = seconds_before + time.perf_counter() - started
        progress.update(1)

        losses = accelerator.gather(flow_loss.detach().float().reshape(1))
        first_step_losses = first_step_losses or losses.tolist()
        if main_process and (state.step % args.logging_steps == 0 or state.step == total_steps):
            row = {"step": state.step, "task": "+".join(tasks), "loss": f"{float(loss.detach()):.6f}",
                   "flow_loss": f"{float(losses.mean()):.6f}", "ewc_penalty": f"{float(penalty.detach()):.6g}",
                   "lr": f"{lr_scheduler.get_last_lr()[0]:.6g}", "replayed": replayed,
                   "seconds": f"{state.seconds:.1f}"}
            log.write(row)
            if accelerator.log_with:
                accelerator.log({k: float(v) for k, v in row.items() if k not in ("task", "step")}, step=state.step)
        progress.set_postfix(loss=f"{float(losses.mean()):.4f}", task="+".join(tasks))

        if state.step % steps_per_stage == 0:
            name = "joint" if args.joint else args.tasks[stage]
            if not args.joint:
                consolidate(args, stage, accelerator, unwrapped, sampler, loss_function, ewc, replay, datasets)
            if main_process:
                finish_stage(args, stage, name, unwrapped, scheduler, state, eval_sets, accelerator)
            accelerator.wait_for_everyone()
        if state.step % args.checkpointing_steps == 0 or state.step == total_steps:
            if main_process:
                folder = args.output_dir / f"{checkpoints.CHECKPOINT_PREFIX}{state.step}"
                checkpoints.save_checkpoint(folder, unwrapped, optimizer, lr_scheduler, ewc, replay, state,
                                            run_config(args))
                checkpoints.prune_checkpoints(args.output_dir, args.checkpoints_total_limit)
            accelerator.wait_for_everyone()
    progress.close()

    fingerprints = gather_object([checkpoints.weights_fingerprint(unwrapped)])
    if main_process:
        load_from = args.hub_model_id if args.push_to_hub else str(args.output_dir)
        save_final_pipeline(args.output_dir, FusionFMPipeline(unet=unwrapped, scheduler=scheduler),
                            model_card(args, state, accelerator.num_processes, load_from))
        summary = {
            "world_size": accelerator.num_processes,
            "distributed_type": str(accelerator.distributed_type),
            "steps": state.step,
            "resumed_from": resumed_from,
            "weights_sha256_per_process": fingerprints,
            "first_step_loss_per_process": first_step_losses,
            "seconds_this_run": round(time.perf_counter() - started, 1),
        }
        if state.quality:
            accuracy, backward = write_quality_csv(args.output_dir / "continual.csv", state.quality,
                                                   state.stage_names, args.tasks)
            summary |= {"ACC": accuracy, "BWT": backward}
            print(quality_markdown(state.quality, state.stage_names, args.tasks))
        write_text_atomic(args.output_dir / "training_summary.json", json.dumps(summary, indent=1))
        if args.push_to_hub:
            url = push_folder_to_hub(args.output_dir, args.hub_model_id, args.output_dir / "model_card.md",
                                     token=args.hub_token)
            logger.info("Pushed to %s", url)
    accelerator.wait_for_everyone()  # leave together: a process group torn down by one side alone can hang
    # Drop the DDP wrapper while the process group is still registered. Otherwise the group dies with the
    # wrapper's reducer at exit, in a destructor that holds the GIL and waits for gloo's worker thread, which
    # may itself need the GIL to free the last collective's tensors: a rare hang at exit (seen in CI-like runs).
    del model
    accelerator.free_memory()
    gc.collect()
    accelerator.end_training()
    return 0


def consolidate(args, stage: int, accelerator: Accelerator, unwrapped, sampler: BatchSampler, loss_function,
                ewc: ElasticWeightConsolidation, replay: ReplayBuffer, datasets: dict[str, LabelledPairs]) -> None:
    """End of a task on every process: its Fisher folded into EWC, its replay quota into the buffer."""
    name = args.tasks[stage]
    if ewc.strength > 0:
        batches = [sampler.draw([name], args.train_batch_size,
                                step_generator(args.seed, accelerator.process_index, stage, stream=1))[0]
                   for _ in range(args.ewc_fisher_batches)]
        fisher = diagonal_fisher(unwrapped, loss_function, batches)
        fisher = {key: accelerator.reduce(value.to(accelerator.device), "mean").cpu() for key, value in fisher.items()}
        ewc.consolidate(unwrapped, fisher)
    if replay.size_per_task:
        # The same draw on every process: the buffers stay identical.
        replay.add_task(name, len(datasets[name]), step_generator(args.seed, 0, stage, stream=2))


def finish_stage(args, stage: int, name: str, unwrapped, scheduler, state: TrainingState,
                 eval_sets: dict, accelerator: Accelerator) -> None:
    """End of a task (or of joint training) on the main process: the row of R, the pipeline after the task."""
    pipeline = FusionFMPipeline(unet=unwrapped, scheduler=scheduler)
    pipeline.set_progress_bar_config(disable=True)
    if eval_sets:
        unwrapped.eval()
        state.quality.append([validation_quality(pipeline, eval_sets[task], "fp32") for task in args.tasks])
        unwrapped.train()
        state.stage_names.append(name)
        logger.info("After %s: quality %s", name, ", ".join(
            f"{task} {value:.3f}" for task, value in zip(args.tasks, state.quality[-1], strict=True)))
    if not args.no_save_each_task and not args.joint:
        folder = args.output_dir / f"after-{stage + 1}-{name}"
        save_pipeline(folder, pipeline, model_card(args, state, accelerator.num_processes, str(folder)))


if __name__ == "__main__":
    sys.exit(main())
