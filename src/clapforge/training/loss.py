"""The contrastive loss over the global batch: the formula is the model file's; this only adds the gather.

`accelerator.gather` returns tensors without gradient, so the embeddings of the other processes would be constants and
the gradient would lose every term that flows through them. `torch.distributed.nn.functional.all_gather` is
differentiable: its backward sums, into each process, the gradients every process computed for that process's slice.
With DDP averaging gradients over N processes, the result is exactly the single-process gradient of the loss over the
concatenated batch (tested in tests/test_train_distributed.py).
"""

import torch
import torch.distributed as dist
from torch.distributed.nn.functional import all_gather

from ..modeling_clap.modeling_laion_clap import contrastive_loss


def gather_with_grad(x: torch.Tensor) -> torch.Tensor:
    """(B, E) on each of N processes -> (N*B, E), in rank order, differentiable."""
    return torch.cat(all_gather(x), dim=0)


def global_contrastive_loss(
    audio_embeds: torch.Tensor, text_embeds: torch.Tensor, logit_scale: torch.Tensor, local_loss: bool = False
) -> torch.Tensor:
    """audio_embeds, text_embeds: this process's (B, E). Returns the loss of the global batch.

    Default: every process computes the full (N*B, N*B) loss (identical on all ranks). `local_loss`: each process
    scores only its own rows against all columns, (B, N*B), which costs N times less memory; the mean over processes
    that DDP's averaging takes is then the same loss.
    """
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return contrastive_loss(audio_embeds, text_embeds, logit_scale)
    all_audio, all_text = gather_with_grad(audio_embeds), gather_with_grad(text_embeds)  # (N*B, E)
    if local_loss:
        first = dist.get_rank() * audio_embeds.shape[0]
        return contrastive_loss(audio_embeds, text_embeds, logit_scale, all_audio, all_text, first_label=first)
    return contrastive_loss(all_audio, all_text, logit_scale)
