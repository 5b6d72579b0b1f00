"""Export a reslab network to ONNX or to a ``torch.export`` program (``.pt2``), then check the file.

Both are exports of eval mode (drop-path and dropout act as their expectations), with a dynamic batch axis.
After writing, the file is run on a fresh batch of another size (onnxruntime for ONNX, the loaded program for
``.pt2``) and compared with the eager network: an output further than ``TOLERANCE`` (relative to the output's
largest magnitude) is an error, and the file is not left behind.
"""

from __future__ import annotations

import contextlib
import io
import json
import tempfile
import warnings
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open
from torch import nn

from ..build import FeatureNet, build
from ..io import CheckpointError, atomic_write
from ..train.checkpoint import STATE_KEY, load_model
from .errors import DeployError, require

FORMATS = ("onnx", "pt2")
EXPORTERS = ("dynamo", "torchscript")
# Largest |exported - eager| allowed, as a fraction of the eager output's largest magnitude (at least 1).
# onnxruntime reorders fp32 sums (fused kernels); observed errors are ~1e-6.
TOLERANCE = 1e-4
OPSET = 18
METADATA_FILE = "reslab_metadata.json"  # inside a .pt2 archive, beside the program


@dataclass
class ExportResult:
    path: Path
    format: str
    max_error: float  # max |exported - eager| / max(1, max |eager|) on the check batch
    check_batch: int


def model_metadata(path: str | Path) -> dict[str, str]:
    """A model file's (or checkpoint's) metadata: the spec, and whatever else it records (e.g. the
    preprocessing contract), without the training state of a checkpoint."""
    try:
        with safe_open(path, framework="pt") as f:
            metadata = dict(f.metadata() or {})
    except (SafetensorError, OSError, ValueError) as err:
        raise CheckpointError(f"{path}: not a readable safetensors file: {err}") from None
    metadata.pop(STATE_KEY, None)
    return metadata


def load_for_export(path: str | Path, *, features_only: bool = False,
                    out_indices: tuple[int, ...] | None = None) -> nn.Module:
    """The network in a model file or checkpoint, in eval mode; or its feature backbone (same weights)."""
    model = load_model(path)
    if not features_only:
        return model
    try:
        backbone = build(model.spec, features_only=True, out_indices=out_indices)
    except ValueError as err:
        raise DeployError(f"--out-indices: {err}") from None
    own = backbone.state_dict()
    backbone.load_state_dict({k: v for k, v in model.state_dict().items() if k in own}, strict=True)
    return backbone.eval()


def default_input_shape(model: nn.Module) -> tuple[int, int, int]:
    """(C, H, W) of the images a network was designed for: 224 px for ImageNet stems, 32 px otherwise."""
    spec = model.spec
    side = 224 if spec.stem.kind == "conv7_maxpool" else 32
    return spec.in_chans, side, side


def output_names(model: nn.Module) -> list[str]:
    if isinstance(model, FeatureNet):
        return [f"features_{i}" for i in model.out_indices]
    return ["logits"]


def export(
    model: nn.Module,
    out: str | Path,
    *,
    format: str = "onnx",
    input_shape: tuple[int, int, int] | None = None,
    metadata: Mapping[str, str] | None = None,
    exporter: str = "dynamo",
    tolerance: float = TOLERANCE,
) -> ExportResult:
    """Write ``model`` (eval mode) to ``out`` and check the written file against it (see the module doc)."""
    if format not in FORMATS:
        raise DeployError(f"--format: must be one of {', '.join(FORMATS)}, got {format!r}")
    if exporter not in EXPORTERS:
        raise DeployError(f"--exporter: must be one of {', '.join(EXPORTERS)}, got {exporter!r}")
    out = Path(out)
    model = model.eval()
    shape = input_shape or default_input_shape(model)
    meta = {**(metadata or {}), "reslab.input_shape": json.dumps(list(shape))}
    gen = torch.Generator().manual_seed(0)
    example = torch.randn(2, *shape, generator=gen)
    check = torch.randn(3, *shape, generator=gen)  # another batch size: the batch axis must be dynamic
    if format == "onnx":
        meta["reslab.exporter"] = exporter
        atomic_write(out, lambda tmp: _write_onnx(model, tmp, example, meta, exporter))
        error = _check(out, model, check, lambda x: _run_onnx(out, x), "onnxruntime", tolerance)
    else:
        atomic_write(out, lambda tmp: _write_pt2(model, tmp, example, meta))
        error = _check(out, model, check, lambda x: _run_pt2(out, x), "the loaded torch.export program",
                       tolerance)
    return ExportResult(out, format, error, len(check))


def _check(out: Path, model: nn.Module, batch: torch.Tensor, run, what: str, tolerance: float) -> float:
    with torch.no_grad():
        expected = model(batch)
    expected = expected if isinstance(expected, list) else [expected]
    got = run(batch)
    error = 0.0
    for e, g in zip(expected, got, strict=True):
        g = torch.as_tensor(g)
        if g.shape != e.shape:
            out.unlink(missing_ok=True)
            raise DeployError(f"{out}: {what} gives an output of shape {tuple(g.shape)}, eager {tuple(e.shape)}")
        scale = max(1.0, float(e.abs().max()))
        error = max(error, float((g - e).abs().max()) / scale)
    if not error <= tolerance:
        out.unlink(missing_ok=True)
        raise DeployError(f"{out}: {what} differs from the eager network by {error:.2e} (relative to the "
                          f"output's scale), more than the tolerance {tolerance:.0e}; the file was removed")
    return error


def _dynamic_batch() -> tuple[dict[int, object]]:
    return ({0: torch.export.Dim("batch", min=1, max=1 << 16)},)


def _write_onnx(model: nn.Module, path: str, example: torch.Tensor, meta: Mapping[str, str], exporter: str) -> None:
    onnx = require("onnx")
    names = output_names(model)
    with tempfile.TemporaryDirectory() as tmp, warnings.catch_warnings(), \
            contextlib.redirect_stdout(io.StringIO()):  # the exporters narrate every stage
        warnings.simplefilter("ignore")
        raw = Path(tmp) / "model.onnx"
        if exporter == "dynamo":
            require("onnxscript")
            torch.onnx.export(model, (example,), str(raw), dynamo=True, input_names=["input"], output_names=names,
                              dynamic_shapes=_dynamic_batch(), opset_version=OPSET, external_data=False,
                              verbose=False)
        else:
            axes = {name: {0: "batch"} for name in ["input", *names]}
            torch.onnx.export(model, (example,), str(raw), dynamo=False, input_names=["input"], output_names=names,
                              dynamic_axes=axes, opset_version=OPSET)
        proto = onnx.load(str(raw))
    set_metadata(proto, meta)
    onnx.save(proto, path)


def set_metadata(proto, meta: Mapping[str, str]) -> None:
    """Put ``meta`` into an ONNX model's ``metadata_props`` (replacing keys already there), and drop the
    per-node debugging notes exporters leave and shorten internal tensor names (stack traces, module paths: a
    sixth of a small int8 file)."""
    graph = proto.graph
    keep = {v.name for v in [*graph.input, *graph.output]}
    short: dict[str, str] = {}

    def rename(name: str) -> str:  # internal tensor names (e.g. "/layer3/layer3.2/conv2/Conv_output_0") -> "t17"
        if not name or name in keep:
            return name
        return short.setdefault(name, f"t{len(short)}")

    for node in graph.node:
        del node.metadata_props[:]
        node.doc_string, node.name = "", ""
        node.input[:] = [rename(n) for n in node.input]
        node.output[:] = [rename(n) for n in node.output]
    for init in graph.initializer:
        init.name = rename(init.name)
    for info in graph.value_info:
        info.name = rename(info.name)
    kept = [p for p in proto.metadata_props if p.key not in meta]
    del proto.metadata_props[:]
    proto.metadata_props.extend(kept)
    for key, value in meta.items():
        entry = proto.metadata_props.add()
        entry.key, entry.value = str(key), str(value)


def onnx_session(path: str | Path, threads: int | None = None):
    """A plain onnxruntime CPU session (all graph optimisations on)."""
    ort = require("onnxruntime")
    options = ort.SessionOptions()
    if threads is not None:
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
    try:
        return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    except Exception as err:  # onnxruntime raises its own exception types for unreadable files
        raise DeployError(f"{path}: onnxruntime cannot load it: {err}") from None


def _run_onnx(path: Path, x: torch.Tensor) -> list:
    session = onnx_session(path)
    return session.run(None, {session.get_inputs()[0].name: x.numpy()})


def _write_pt2(model: nn.Module, path: str, example: torch.Tensor, meta: Mapping[str, str]) -> None:
    program = torch.export.export(model, (example,), dynamic_shapes=_dynamic_batch())
    with open(path, "wb") as f:  # a file object: the archive check wants a .pt2 name, the temporary has none
        torch.export.save(program, f, extra_files={METADATA_FILE: json.dumps(dict(meta))})


def _run_pt2(path: Path, x: torch.Tensor) -> list:
    program = torch.export.load(str(path))
    with torch.no_grad():
        out = program.module()(x)
    return out if isinstance(out, list) else [out]


__all__ = ["EXPORTERS", "FORMATS", "TOLERANCE", "ExportResult", "default_input_shape", "export",
           "load_for_export", "model_metadata", "onnx_session", "set_metadata"]
