"""Inference: the one layer that loads a model and embeds audio and text with it.

- `loading`: `load_model(folder_or_hub_id)` -> (model in eval mode, processor), cached per process; `load_engine`;
- `engine`: `EmbeddingEngine`, THE embedding engine (batched audio and text, CPU chunking, eval/inference mode, the
  precision applied in `running()`, an optional `torch.compile`d audio tower);
- `precision`: THE precision policy (`native_bf16`, `choose_precision`: what "auto" stands for on a device);
- `zero_shot`: THE zero-shot scorer (class prompts -> class embeddings -> scaled cosine -> softmax);
- `compile`, `onnx_backend`: `torch.compile` of the audio tower; the ONNX Runtime backend;
- `embedding`: the functional forms over the engine (`embed_audio_batches`, `embed_texts`).

Tools, evaluation, training validation, the demo and the commands call it; it imports none of them. The prompt rule
lives below it, in `clapforge.prompts`, so that `data` can use it without importing this layer.
"""
