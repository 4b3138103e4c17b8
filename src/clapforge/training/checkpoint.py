"""Atomic, rotating training checkpoints on top of `accelerator.save_state`.

A checkpoint is written to a hidden temporary folder and renamed to `step-NNNNNNNN` only when every process has
finished writing, so a crash mid-save leaves the previous checkpoints untouched and never a half checkpoint under a
final name. A `COMPLETE` marker inside makes "latest" unambiguous.
"""

import os
import shutil
from pathlib import Path

from accelerate import Accelerator

PREFIX = "step-"
MARKER = "COMPLETE"


def checkpoint_name(step: int) -> str:
    return f"{PREFIX}{step:08d}"


def complete_checkpoints(folder: Path) -> list[Path]:
    """Finished checkpoints in `folder`, oldest first."""
    if not folder.is_dir():
        return []
    found = [p for p in folder.iterdir() if p.name.startswith(PREFIX) and (p / MARKER).is_file()]
    return sorted(found, key=lambda p: int(p.name[len(PREFIX) :]))


def save_checkpoint(accelerator: Accelerator, folder: Path, step: int, keep_last: int) -> Path:
    """Save the full training state (model, optimizer, scheduler, scaler, RNG, registered objects) for `step`."""
    final = folder / checkpoint_name(step)
    partial = folder / f".partial-{checkpoint_name(step)}"
    if accelerator.is_main_process:
        folder.mkdir(parents=True, exist_ok=True)
        for stale in folder.glob(".partial-*"):  # left by an earlier crash, maybe at another step
            shutil.rmtree(stale, ignore_errors=True)
    accelerator.wait_for_everyone()
    accelerator.save_state(str(partial))
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        (partial / MARKER).write_text(f"{step}\n")
        if final.exists():  # the same step saved again (e.g. the final save right after a periodic one)
            shutil.rmtree(final)
        os.replace(partial, final)
        for old in complete_checkpoints(folder)[:-keep_last]:
            shutil.rmtree(old)
    accelerator.wait_for_everyone()
    return final


def resolve_resume(resume: str, folder: Path) -> Path:
    """`resume` is "latest" (the newest complete checkpoint in `folder`) or a checkpoint path."""
    if resume == "latest":
        found = complete_checkpoints(folder)
        if not found:
            raise FileNotFoundError(f"resume=latest: no complete checkpoint in {folder}")
        return found[-1]
    path = Path(resume)
    if not (path / MARKER).is_file():
        raise FileNotFoundError(f"resume={resume}: not a complete clapforge checkpoint (no {MARKER} marker)")
    return path
