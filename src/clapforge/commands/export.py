"""`clapforge export MODEL OUT --format onnx [--quantize int8] [--opset N]`: ONNX graphs of both towers for ONNX
Runtime, transformers.js-style layout (`OUT/onnx/`), with the processor files, a manifest and a model card."""

from __future__ import annotations

import argparse

from ._types import positive_int

DEFAULT_OPSET = 17  # = export.onnx_graphs.DEFAULT_OPSET (restated: argument parsing imports no torch)


def register(commands: argparse._SubParsersAction) -> None:
    parser = commands.add_parser("export", help="export a model as ONNX graphs (fp32, and int8 with --quantize)")
    parser.add_argument("model", help="clapforge model folder or Hub id")
    parser.add_argument("out", help="output folder (may be MODEL itself: then only MODEL/onnx/ is written)")
    parser.add_argument("--format", default="onnx", choices=["onnx"], help="artefact format (default: onnx)")
    parser.add_argument("--quantize", choices=["int8"], help="also write int8 graphs (*_quantized.onnx)")
    parser.add_argument(
        "--method",
        choices=["dynamic", "static"],
        default="dynamic",
        help="int8 method: dynamic (activation ranges per batch, default) or static (calibrated on synthetic clips)",
    )
    parser.add_argument("--opset", type=positive_int, default=DEFAULT_OPSET,
                        help=f"ONNX opset (default {DEFAULT_OPSET})")
    parser.set_defaults(run=run, check=check)


def check(args: argparse.Namespace) -> None:
    """What the arguments alone tell (before torch is imported)."""
    from ..inference.references import resolve_model

    resolve_model(args.model)  # a mistyped path or a data file given as the model answers now


def run(args: argparse.Namespace) -> int:
    from ..export.onnx_folder import export_model

    manifest = export_model(args.model, args.out, format=args.format, opset=args.opset, quantize=args.quantize,
                            method=args.method)
    for name, graph in manifest["graphs"].items():
        check = graph["parity_to_pytorch"]
        print(f"{graph['file']:36s} {graph['bytes'] / 1e6:8.1f} MB  min cosine to PyTorch {check['min_cosine']:.6f}"
              f"  ({name})")
    print(f"wrote {args.out}")
    return 0
