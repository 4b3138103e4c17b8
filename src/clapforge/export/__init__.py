"""Deployment artefacts: `export_model` writes a model as ONNX graphs (with int8 versions) that
`inference.onnx_backend` runs; `onnx_graphs` exports and checks one tower; `quantize` makes the int8 graphs."""
