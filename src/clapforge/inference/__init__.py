"""Inference: the one layer that loads a model, formats prompts and embeds audio and text.

- `loading`: `load_model(folder_or_hub_id)` -> (model in eval mode, processor), cached per process;
- `prompts`: `DEFAULT_PROMPT` and `format_prompt`, the one zero-shot prompt rule;
- `embedding`: batched audio and text embedding (CPU chunking, `torch.compile`, eval/inference mode, autocast).

Tools, evaluation, training validation, the demo and the commands call it; it imports none of them. Import from the
submodules: `prompts` stays free of torch, so the command line can read `DEFAULT_PROMPT` without loading it.
"""
