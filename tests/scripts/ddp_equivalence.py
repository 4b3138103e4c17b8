"""Launched by tests/test_train_distributed.py with 2 CPU processes:

    ACCELERATE_USE_CPU=1 accelerate launch --multi_gpu --num_processes 2 ddp_equivalence.py IN.pt OUT.pt

IN.pt holds the initial state_dict of a dropout-free test-tiny model and a fixed batch (input_features, input_ids,
attention_mask), in float64 (`DTYPE`; tests/test_train_distributed.py says why). Rank r takes rows [r*B/N, (r+1)*B/N)
of the batch, runs the DDP-prepared model's forward (so DDP's hooks run), computes the loss with
`global_contrastive_loss` and backpropagates. Rank 0 writes, per mode, the loss (the mean over ranks, which is the loss
of the global batch for both modes) and every parameter's gradient after DDP's averaging.

Modes: "global" (local_loss=False), "local" (local_loss=True), and "no_grad_gather": a deliberately wrong loss that
gathers with `accelerator.gather` (no gradient through the other ranks' embeddings) -- the test checks that this one
does NOT match, which shows the comparison can tell a right gather from a wrong one.
"""

import sys

import torch
from accelerate import Accelerator, DistributedDataParallelKwargs
from accelerate.utils import DistributedType

import clapforge
from clapforge.modeling_clap.modeling_laion_clap import contrastive_loss
from clapforge.training.loss import global_contrastive_loss

NO_DROPOUT = {
    "text_config": {"hidden_dropout_prob": 0.0, "attention_probs_dropout_prob": 0.0},
    "audio_config": {"drop_path_rate": 0.0, "drop_rate": 0.0, "attn_drop_rate": 0.0},
}
# Both the 2-process run and its single-process reference compute in float64, so that the only difference between them,
# the order of the summations, stays at float64 rounding (~1e-16 relative) far below any real error.
DTYPE = torch.float64


def build_model(state_dict: dict) -> torch.nn.Module:
    """test-tiny without dropout, in training mode except BatchNorm.

    BatchNorm in training mode normalises with the statistics of the batch it sees, i.e. of each process's half under
    DDP (SyncBatchNorm needs CUDA), which no single-process run reproduces; its running statistics are used instead.
    """
    model = clapforge.create_model("test-tiny", **NO_DROPOUT).to(DTYPE)
    model.load_state_dict(state_dict)  # copies into the DTYPE parameters
    model.train()
    for module in model.modules():
        if isinstance(module, torch.nn.modules.batchnorm._BatchNorm):
            module.eval()
    return model


def wrong_loss(accelerator, audio, text, logit_scale):
    all_audio, all_text = accelerator.gather(audio), accelerator.gather(text)  # no grad through other ranks
    first = accelerator.process_index * audio.shape[0]
    return contrastive_loss(audio, text, logit_scale, all_audio, all_text, first_label=first)


def main(inp: str, out: str) -> None:
    accelerator = Accelerator(kwargs_handlers=[DistributedDataParallelKwargs(find_unused_parameters=True)])
    assert accelerator.distributed_type == DistributedType.MULTI_CPU, accelerator.distributed_type
    assert accelerator.num_processes == 2, accelerator.num_processes
    data = torch.load(inp)
    assert data["batch"]["input_features"].dtype == DTYPE, data["batch"]["input_features"].dtype
    model = accelerator.prepare(build_model(data["state_dict"]))
    unwrapped = accelerator.unwrap_model(model)
    assert model is not unwrapped  # really DDP-wrapped
    rank, world = accelerator.process_index, accelerator.num_processes
    batch = data["batch"]
    per = batch["input_ids"].shape[0] // world
    mine = {k: v[rank * per : (rank + 1) * per] for k, v in batch.items()}

    results = {"world": world, "rank_rows": per}
    for mode in ("global", "local", "no_grad_gather"):
        model.zero_grad(set_to_none=True)
        output = model(**mine)  # DDP forward: registers the reducer hooks that average the gradients
        if mode == "no_grad_gather":
            loss = wrong_loss(accelerator, output.audio_embeds, output.text_embeds, unwrapped.logit_scale_a)
        else:
            loss = global_contrastive_loss(
                output.audio_embeds, output.text_embeds, unwrapped.logit_scale_a, local_loss=mode == "local"
            )
        accelerator.backward(loss)
        losses = accelerator.gather(loss.detach()[None])  # (world,)
        grads = {n: p.grad.detach().clone() for n, p in unwrapped.named_parameters() if p.grad is not None}
        results[mode] = {"loss": losses.mean(), "rank_losses": losses, "grads": grads}
    if accelerator.is_main_process:
        torch.save(results, out)
    accelerator.wait_for_everyone()
    accelerator.end_training()


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
