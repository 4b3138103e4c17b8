"""`train(recipe)`: the training loop, with Accelerate, one process or many, for any `TrainingObjective`
(contrastive CLAP training or classification, `objective.py`).

    accelerate launch -m clapforge.train --config recipes/NAME.yaml [dotted.key=value ...]
    clapforge train --config recipes/NAME.yaml [dotted.key=value ...]

The data stream is sharded across processes by `split_dataset_by_node` (in `stream_dataset`), so the DataLoader is
deliberately NOT passed to `accelerator.prepare`: accelerate would shard (or dispatch) it a second time.
"""

import glob
import logging
import re
import time
from pathlib import Path
from typing import Any

import torch
from accelerate import Accelerator, DistributedDataParallelKwargs
from accelerate.utils import ProjectConfiguration, set_seed
from torchdata.stateful_dataloader import StatefulDataLoader
from tqdm.auto import tqdm

from ..inference.precision import native_bf16

# Imported for their `register_objective`: `objective_for` finds the objectives only once their modules have run.
from . import classification, contrastive  # noqa: F401
from .checkpoint import complete_checkpoints, resolve_resume, save_checkpoint
from .objective import objective_for
from .optim import build_optimizer, warmup_cosine
from .recipe import Recipe, RecipeError

logger = logging.getLogger(__name__)


class TrainingDiverged(RuntimeError):
    """The loss became NaN or infinite; the message names the step and the last good checkpoint."""


class TrainingProgress:
    """Step, epoch and data position: checkpointed with the rest of the state via `register_for_checkpointing`."""

    def __init__(self, loader: StatefulDataLoader) -> None:
        self.step, self.epoch, self.loader = 0, 0, loader

    def state_dict(self) -> dict[str, Any]:
        return {"step": self.step, "epoch": self.epoch, "loader": self.loader.state_dict()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.step, self.epoch = state["step"], state["epoch"]
        self.loader.load_state_dict(state["loader"])


def _collate(examples: list[dict]) -> list[dict]:
    return examples  # feature extraction happens in the loop, where the per-step generator lives


def _step_generator(seed: int, step: int, rank: int) -> torch.Generator:
    # Augmentation draws depend only on (seed, step, rank): a resumed run repeats them without saved RNG state.
    return torch.Generator().manual_seed(seed * 1_000_003 + step * 1_009 + rank)


def _check_data(recipe: Recipe) -> None:
    for field, source in (("data.train", recipe.data.train), ("data.validation", recipe.data.validation)):
        if source is None or "://" in source or Path(source).exists():
            continue
        # glob.glob, not Path().glob: pathlib refuses absolute patterns (NotImplementedError on Python 3.11).
        looks_like_hub_id = re.fullmatch(r"[\w.-]+/[\w.-]+", source) is not None and not source.startswith(".")
        if not glob.glob(source) and not looks_like_hub_id:
            raise RecipeError(f"{field}: {source} does not exist (expected a local path, a glob or a Hub dataset id)")


def _drop_stale_accelerator_state(mixed_precision: str) -> None:
    """accelerate keeps one process-wide state and refuses an Accelerator with another precision, so a second
    `train()` in the same process (a notebook, a test session) with another `mixed_precision` would fail. The stale
    precision state is dropped; the process group (accelerate's PartialState) is kept."""
    from accelerate.state import AcceleratorState

    shared = AcceleratorState._shared_state
    if shared and str(shared.get("_mixed_precision")) != mixed_precision:
        AcceleratorState._reset_state(reset_partial_state=False)


def _mixed_precision(requested: str) -> str:
    """The recipe's mixed precision, except bf16 on a CPU that only emulates it (`native_bf16`): a recipe asks for
    bf16 to run faster, and there it would run ~10x slower than fp32, so the run trains in fp32 and says so."""
    device = "cuda" if torch.cuda.is_available() else "cpu"
    if requested == "bf16" and not native_bf16(device):
        logger.warning("train.mixed_precision=bf16: this CPU has no bf16 kernels (AVX-512 BF16 or AMX), where bf16 "
                       "runs ~10x slower than fp32; training in fp32")
        return "no"
    return requested


def train(recipe: Recipe) -> dict[str, float]:
    """Run the recipe; returns the last validation metrics. Checkpoints go to <output_dir>/checkpoints."""
    _check_data(recipe)
    cfg, out = recipe.train, Path(recipe.output_dir)
    mixed_precision = _mixed_precision(cfg.mixed_precision)
    _drop_stale_accelerator_state(mixed_precision)
    accelerator = Accelerator(
        mixed_precision=mixed_precision,
        log_with=recipe.log_with,
        project_config=ProjectConfiguration(project_dir=str(out), logging_dir=str(out / "logs")),
        # Fusion layers get no gradient in a batch without long clips, and logit_scale_t is never trained.
        kwargs_handlers=[DistributedDataParallelKwargs(find_unused_parameters=True)],
    )
    set_seed(cfg.seed)
    objective = objective_for(recipe)
    model, processor, pretrained = objective.build()
    if cfg.gradient_checkpointing:
        model.gradient_checkpointing_enable()
    if cfg.channels_last:
        # Only 4-D tensors change layout; conv outputs then stay channels-last through the CNN (oneDNN's fast path).
        model.audio_model.to(memory_format=torch.channels_last)
    optimizer = build_optimizer(model, cfg, pretrained)
    scheduler = warmup_cosine(optimizer, cfg.warmup_steps, cfg.max_steps)

    rank, world = accelerator.process_index, accelerator.num_processes
    train_data = objective.stream(
        recipe.data.train, recipe.data.train_split, shuffle=True, seed=cfg.seed, rank=rank, world_size=world
    )
    # drop_last: all processes must gather equally sized batches. A generator of its own: each new iterator draws a
    # base seed, which must not come from the global RNG that load_state restores for dropout (a resumed run would
    # draw it right after the restore, an uninterrupted one before step 1, and their dropout masks would differ).
    loader = StatefulDataLoader(
        train_data,
        batch_size=cfg.batch_size,
        collate_fn=_collate,
        drop_last=True,
        num_workers=recipe.data.num_workers,
        generator=torch.Generator().manual_seed(cfg.seed),
    )
    model, optimizer, scheduler = accelerator.prepare(model, optimizer, scheduler)
    unwrapped = accelerator.unwrap_model(model)
    progress = TrainingProgress(loader)
    accelerator.register_for_checkpointing(progress)
    accelerator.register_for_checkpointing(train_data.skip_counter)  # skip counts survive a resume
    checkpoints = out / "checkpoints"
    if recipe.resume:
        accelerator.load_state(str(resolve_resume(recipe.resume, checkpoints)))
        logger.info("resumed at step %d", progress.step)
    validation = objective.validation_set() if recipe.data.validation else []
    if accelerator.is_main_process:
        accelerator.init_trackers(recipe.name, config=_flat(recipe.to_dict()))

    metrics: dict[str, float] = {}
    bar = tqdm(total=cfg.max_steps, initial=progress.step, disable=not accelerator.is_local_main_process, desc="train")
    started, seen, saved_at = time.perf_counter(), 0, None
    while progress.step < cfg.max_steps:
        train_data.set_epoch(progress.epoch)
        for examples in loader:
            batch = objective.make_batch(processor, examples, _step_generator(cfg.seed, progress.step, rank))
            batch = {k: v.to(accelerator.device) for k, v in batch.items()}
            with accelerator.autocast():
                loss = objective.loss(model, batch)
            if not torch.isfinite(loss):
                last = complete_checkpoints(checkpoints)
                raise TrainingDiverged(
                    # progress.step counts finished steps (checkpoint step-N follows step N); this is the next one.
                    f"loss is {loss.item()} at step {progress.step + 1}; last good checkpoint: "
                    f"{last[-1] if last else 'none'}"
                )
            accelerator.backward(loss)
            if cfg.max_grad_norm:
                accelerator.clip_grad_norm_(model.parameters(), cfg.max_grad_norm)
            optimizer.step()
            scheduler.step()
            optimizer.zero_grad(set_to_none=True)
            objective.after_step()
            progress.step += 1
            seen += len(examples) * world
            throughput = seen / (time.perf_counter() - started)
            accelerator.log(
                {
                    "train/loss": loss.item(),
                    "train/lr": scheduler.get_last_lr()[0],
                    "train/samples_per_s": throughput,
                    "train/skipped_samples": train_data.skip_counter.total(),
                    **objective.step_logs(),
                },
                step=progress.step,
            )
            bar.update(1)
            bar.set_postfix(
                loss=f"{loss.item():.3f}", lr=f"{scheduler.get_last_lr()[0]:.2e}", samples_s=f"{throughput:.1f}"
            )
            if recipe.eval.every and progress.step % recipe.eval.every == 0 and validation:
                metrics = _validate(accelerator, objective, unwrapped, processor, validation, recipe, progress.step)
            if recipe.checkpoint.every and progress.step % recipe.checkpoint.every == 0:
                save_checkpoint(accelerator, checkpoints, progress.step, recipe.checkpoint.keep_last)
                saved_at = progress.step
            if progress.step >= cfg.max_steps:
                break
        else:
            progress.epoch += 1  # the stream is exhausted: next epoch, new shard order and captions
    bar.close()
    if saved_at != progress.step:  # the periodic save may have just written this very step
        save_checkpoint(accelerator, checkpoints, progress.step, recipe.checkpoint.keep_last)
    if validation:
        metrics = _validate(accelerator, objective, unwrapped, processor, validation, recipe, progress.step)
    if accelerator.is_main_process:
        objective.export(unwrapped, processor, metrics, out)
    accelerator.end_training()
    return metrics


def _validate(accelerator, objective, model, processor, validation, recipe: Recipe, step: int) -> dict[str, float]:
    metrics: dict[str, float] = {}
    if accelerator.is_main_process:
        metrics = objective.validate(model, processor, validation, recipe.eval.batch_size)
        accelerator.log({f"val/{k}": v for k, v in objective.loggable(metrics).items()}, step=step)
        logger.info("step %d validation: %s", step, metrics)
    accelerator.wait_for_everyone()
    return metrics


def _flat(tree: dict, prefix: str = "") -> dict[str, Any]:
    """Trackers take flat scalar hyperparameters."""
    flat: dict[str, Any] = {}
    for key, value in tree.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            flat.update(_flat(value, f"{name}."))
        else:
            flat[name] = value if isinstance(value, int | float | str | bool) else str(value)
    return flat
