"""Static int8 quantisation of a reslab network with onnxruntime's tools.

The route (docs/deploy.md has the measurements behind it): export fp32 ONNX, let onnxruntime's pre-processing
fold batch norms into the convolutions, then ``quantize_static`` in the QDQ format with per-channel int8
weights and uint8 activations, whose ranges come from calibration images passed through the fp32 network.
The result is an ordinary ONNX file that plain onnxruntime runs with its int8 kernels. (torch.ao's PT2E flow
fails on torch 2.14 for these networks; eager-mode torch quantisation is deprecated.)
"""

from __future__ import annotations

import tempfile
from collections.abc import Iterator, Mapping
from pathlib import Path

import numpy as np

from ..data import Split
from ..io import atomic_write
from .errors import DeployError, require
from .export import set_metadata

CALIBRATION_METHODS = ("minmax", "entropy", "percentile")


def calibration_images(split: Split, count: int, *, seed: int = 0, batch_size: int = 64) -> list[np.ndarray]:
    """The first ``count`` images of a seeded shuffle of ``split`` (normalised, not augmented), in batches."""
    if count < 1:
        raise DeployError(f"--calib-images: must be at least 1, got {count}")
    out, taken = [], 0
    for images, _ in split.batches(batch_size, shuffle=True, augment=False, seed=seed):
        out.append(images[: count - taken].numpy())
        taken += len(out[-1])
        if taken >= count:
            break
    return out


def quantize_onnx(fp32: str | Path, out: str | Path, calibration: list[np.ndarray], *,
                  method: str = "minmax", metadata: Mapping[str, str] | None = None) -> None:
    """Write the int8 QDQ version of the fp32 ONNX file ``fp32`` to ``out`` (atomically)."""
    if method not in CALIBRATION_METHODS:
        raise DeployError(f"--calib-method: must be one of {', '.join(CALIBRATION_METHODS)}, got {method!r}")
    onnx = require("onnx")
    quantization = require("onnxruntime.quantization")
    from onnxruntime.quantization.shape_inference import quant_pre_process

    methods = {"minmax": quantization.CalibrationMethod.MinMax,
               "entropy": quantization.CalibrationMethod.Entropy,
               "percentile": quantization.CalibrationMethod.Percentile}
    input_name = onnx.load(str(fp32), load_external_data=False).graph.input[0].name

    class Reader(quantization.CalibrationDataReader):
        def __init__(self) -> None:
            self.batches: Iterator[np.ndarray] = iter(calibration)

        def get_next(self) -> dict[str, np.ndarray] | None:
            batch = next(self.batches, None)
            return None if batch is None else {input_name: batch}

    with tempfile.TemporaryDirectory() as tmp:
        pre, raw = Path(tmp) / "pre.onnx", Path(tmp) / "int8.onnx"
        quant_pre_process(str(fp32), str(pre))  # shape inference + batch norms folded into the convolutions
        quantization.quantize_static(
            str(pre), str(raw), Reader(),
            quant_format=quantization.QuantFormat.QDQ,
            per_channel=True,
            activation_type=quantization.QuantType.QUInt8,  # u8 activations x s8 weights: the fast x86 kernels
            weight_type=quantization.QuantType.QInt8,
            calibrate_method=methods[method],
            calibration_providers=["CPUExecutionProvider"],
        )
        proto = onnx.load(str(raw))
    set_metadata(proto, {**(metadata or {}), "reslab.quantization": f"int8 static QDQ, per-channel weights, "
                                                                    f"{method} calibration"})
    atomic_write(out, lambda path: onnx.save(proto, path))


__all__ = ["CALIBRATION_METHODS", "calibration_images", "quantize_onnx"]
