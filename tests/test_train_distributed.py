"""Distributed contrastive training is the single-process computation on the concatenated batch.

A real 2-process CPU run (gloo, `ACCELERATE_USE_CPU=1 accelerate launch --multi_gpu --num_processes 2`) runs
tests/scripts/ddp_equivalence.py: the DDP-prepared test-tiny model, half of a fixed batch per process,
`global_contrastive_loss`, backward. Its loss and every parameter's gradient (after DDP's averaging) must equal those
of one process computing the model file's `contrastive_loss` on the whole batch, with and without `local_loss`, both
sides in float64 (`TOL` says why). A wrong gather (`accelerator.gather`, which has no gradient) must not match: the
comparison can fail.
"""

import importlib.util
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import clapforge
from clapforge.modeling_clap.modeling_laion_clap import contrastive_loss

pytestmark = pytest.mark.slow  # launches two training processes

SCRIPT = Path(__file__).parent / "scripts" / "ddp_equivalence.py"
BATCH, TEXT_LEN, WORLD = 8, 12, 2
# The two runs compute the same sums in different orders (per-process halves, all-gather, DDP's all-reduce vs one batch;
# the kernels also pick their order per CPU), so they agree to rounding only. In float32 that rounding is not a fixed
# amount: text_projection.linear2.bias differed by 1.2e-5 (0.1% of it) on an AMX CPU, and gradients that are zero in
# exact arithmetic (the attention key biases) come out as pure float32 noise, so no tolerance relative to a tensor's own
# values holds. Both sides therefore run in float64 (ddp_equivalence.DTYPE): a reduction over n terms then rounds by at
# most ~n * 1.1e-16 * sum|terms|; with n <= 1e5 summed terms and terms no larger than ~1 here, that is <= ~1e-11,
# whatever order the kernels sum in (measured: 1.1e-14 on an AMX CPU). A real error is of the size of the gradients
# (largest 0.1; the wrong gather below is off by 1.5e-2), nine orders above atol.
TOL = dict(rtol=1e-9, atol=1e-10)


def _script_module():
    spec = importlib.util.spec_from_file_location("ddp_equivalence", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _fixed_batch() -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(1234)
    features = torch.randn(BATCH, 1, 1001, 64, generator=g) * 3 - 5  # log-mel-like scale
    ids = torch.randint(3, 1000, (BATCH, TEXT_LEN), generator=g)
    ids[:, 0] = 0  # <s>
    lengths = torch.randint(4, TEXT_LEN + 1, (BATCH,), generator=g)
    mask = (torch.arange(TEXT_LEN)[None] < lengths[:, None]).long()
    ids[torch.arange(BATCH), lengths - 1] = 2  # </s>
    ids[mask == 0] = 1  # <pad>
    return {"input_features": features, "input_ids": ids, "attention_mask": mask}


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """(distributed results, single-process reference)."""
    tmp = tmp_path_factory.mktemp("ddp")
    module = _script_module()
    torch.manual_seed(0)
    state_dict = clapforge.create_model("test-tiny", **module.NO_DROPOUT).to(module.DTYPE).state_dict()
    batch = _fixed_batch()
    batch["input_features"] = batch["input_features"].to(module.DTYPE)
    torch.save({"state_dict": state_dict, "batch": batch}, tmp / "in.pt")

    # A private HF_HOME: no user accelerate config (~/.cache/huggingface/accelerate/default_config.yaml) leaks in.
    env = {
        **os.environ,
        "ACCELERATE_USE_CPU": "1",
        "HF_HOME": str(tmp / "hf_home"),
        "HF_HUB_OFFLINE": "1",
        "OMP_NUM_THREADS": "1",
        "PYTHONWARNINGS": "ignore",
    }
    launcher = [sys.executable, "-m", "accelerate.commands.launch"]
    command = launcher + [
        "--multi_gpu",
        "--num_processes",
        str(WORLD),
        "--num_machines",
        "1",
        "--mixed_precision",
        "no",
        "--dynamo_backend",
        "no",
        "--main_process_port",
        str(_free_port()),
        str(SCRIPT),
        str(tmp / "in.pt"),
        str(tmp / "out.pt"),
    ]
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-5000:]
    distributed = torch.load(tmp / "out.pt")

    model = module.build_model(state_dict)
    output = model(**batch)
    loss = contrastive_loss(output.audio_embeds, output.text_embeds, model.logit_scale_a)
    loss.backward()
    reference = {
        "loss": loss.detach(),
        "grads": {n: p.grad.detach().clone() for n, p in model.named_parameters() if p.grad is not None},
    }
    return distributed, reference


def test_really_two_processes(runs):
    distributed, _ = runs
    assert distributed["world"] == WORLD and distributed["rank_rows"] == BATCH // WORLD


@pytest.mark.parametrize("mode", ["global", "local"])
def test_same_loss_and_gradients_as_one_process(runs, mode):
    distributed, reference = runs
    result = distributed[mode]
    torch.testing.assert_close(result["loss"], reference["loss"], **TOL)
    if mode == "global":  # every rank computes the loss of the whole global batch
        torch.testing.assert_close(result["rank_losses"], reference["loss"].expand(WORLD), **TOL)
    else:  # each rank scores only its own rows: different per-rank losses, the global one is their mean
        assert not torch.allclose(result["rank_losses"][0], result["rank_losses"][1])
    grads, expected = result["grads"], reference["grads"]
    assert set(grads) == set(expected)
    assert all(g.dtype == torch.float64 for g in [*grads.values(), *expected.values()])  # TOL assumes float64
    # The gradient reaches both towers and the logit scale.
    assert any(n.startswith("audio_model.") for n in grads) and any(n.startswith("text_model.") for n in grads)
    assert "logit_scale_a" in grads and expected["logit_scale_a"].abs() > 0
    for name in expected:
        torch.testing.assert_close(grads[name], expected[name], **TOL, msg=lambda m, name=name: f"{name}: {m}")


def test_a_gather_without_gradient_does_not_match(runs):
    """The control: `accelerator.gather` drops the gradient through the other ranks' embeddings."""
    distributed, reference = runs
    result = distributed["no_grad_gather"]
    torch.testing.assert_close(result["loss"], reference["loss"], **TOL)  # same loss value...
    mismatched = [n for n in reference["grads"] if not torch.allclose(result["grads"][n], reference["grads"][n], **TOL)]
    assert len(mismatched) > len(reference["grads"]) // 2  # ...but wrong gradients
