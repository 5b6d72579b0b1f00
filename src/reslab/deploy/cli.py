"""``reslab export`` and ``reslab quantize``."""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

from .errors import DeployError


def _model_path(text: str) -> Path:
    path = Path(text)
    if not path.is_file():
        raise DeployError(f"{path}: no such model file")
    return path


def cmd_export(args: argparse.Namespace) -> int:
    from .export import TOLERANCE, export, load_for_export, model_metadata

    source = _model_path(args.model)
    fmt = args.format or Path(args.out).suffix.lstrip(".")
    if fmt not in ("onnx", "pt2") or Path(args.out).suffix != f".{fmt}":
        raise DeployError(f"--out {args.out}: give a .onnx or .pt2 file name matching --format ({args.format})")
    model = load_for_export(source, features_only=args.features_only, out_indices=args.out_indices)
    metadata = {**model_metadata(source), "reslab.source": source.name}
    result = export(model, args.out, format=fmt, input_shape=args.input_size, metadata=metadata,
                    exporter=args.exporter)
    checked = "onnxruntime" if fmt == "onnx" else "the loaded torch.export program"
    print(f"wrote {result.path} ({result.path.stat().st_size / 1e6:.2f} MB, {model.spec.name}, dynamic batch); "
          f"{checked} matches eager on a batch of {result.check_batch}: max error {result.max_error:.1e} "
          f"(relative; tolerance {TOLERANCE:.0e})")
    return 0


def cmd_quantize(args: argparse.Namespace) -> int:
    import torch

    from ..data import load_data
    from ..train.config import ConfigError, checkpoint_config
    from .export import export, load_for_export, model_metadata
    from .measure import accuracy, eager_runner, file_size, latency, onnx_runner
    from .quantize import calibration_images, quantize_onnx

    source = _model_path(args.model)
    out = Path(args.out)
    if out.suffix != ".onnx":
        raise DeployError(f"--out {out}: the int8 model is an ONNX file; give a .onnx name")
    model = load_for_export(source)
    spec = model.spec
    # The data of the run the model came from (its config.yaml), unless --data/--config/--set say otherwise.
    config = checkpoint_config(source, args.config, args.data, args.set or ())
    data = load_data(config.data, seed=config.seed)
    if (spec.num_classes, spec.in_chans) != (data.num_classes, data.in_chans):
        raise ConfigError(
            f"data.name: {source} holds {spec.name} for {spec.in_chans}-channel images and {spec.num_classes} "
            f"classes, but {data.name} has {data.in_chans} channel(s) and {data.num_classes} classes"
        )
    threads = args.threads or torch.get_num_threads()
    torch.set_num_threads(threads)
    shape = (data.in_chans, data.image_size, data.image_size)
    metadata = {**model_metadata(source), "reslab.source": source.name}
    calibration = calibration_images(data.train, args.calib_images, seed=config.seed)
    with tempfile.TemporaryDirectory() as tmp:
        fp32 = Path(tmp) / "fp32.onnx"
        export(model, fp32, format="onnx", input_shape=shape, metadata=metadata, exporter=args.exporter)
        quantize_onnx(fp32, out, calibration, method=args.calib_method,
                      metadata={**metadata, "reslab.calibration": f"{args.calib_images} {data.name} train images"})
        runners = {"eager fp32": eager_runner(model), "onnxruntime fp32": onnx_runner(fp32, threads),
                   "onnxruntime int8": onnx_runner(out, threads)}
        preds = accuracy(runners, data.test)
        sizes = {"fp32 (ONNX)": file_size(fp32), "int8 (ONNX)": file_size(out)}
        batch = next(data.test.batches(64, shuffle=False, augment=False))[0].numpy()
        lat1 = latency(runners, batch[:1], rounds=args.rounds, calls=10)
        lat64 = latency(runners, batch, rounds=args.rounds)
    labels = preds.pop("labels")
    acc = {name: float((p == labels).mean()) for name, p in preds.items()}
    print(f"{spec.name} -> {out} (int8 QDQ, per-channel weights; {args.calib_method} calibration on "
          f"{sum(len(b) for b in calibration)} {data.name} train images)")
    print(f"accuracy on {data.name} test ({len(labels)} images):")
    for name, a in acc.items():
        print(f"  {name:<18} {100 * a:6.2f} %")
    agree = float((preds["onnxruntime int8"] == preds["eager fp32"]).mean())
    print(f"  int8 - fp32: {100 * (acc['onnxruntime int8'] - acc['eager fp32']):+.2f} points; "
          f"top-1 agreement {100 * agree:.2f} %")
    print(f"file size: fp32 {sizes['fp32 (ONNX)'] / 1e6:.3f} MB, int8 {sizes['int8 (ONNX)'] / 1e6:.3f} MB "
          f"({sizes['fp32 (ONNX)'] / sizes['int8 (ONNX)']:.2f}x smaller)")
    print(f"latency (median of {args.rounds} interleaved rounds, {threads} thread(s)):")
    for name in runners:
        print(f"  {name:<18} batch 1 {1e3 * lat1[name]:8.3f} ms   batch 64 {1e3 * lat64[name]:8.2f} ms")
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add ``export`` and ``quantize`` to the ``reslab`` parser."""
    from ..argtypes import parse_input_size

    export = subparsers.add_parser(
        "export",
        help="write a model to ONNX or a torch.export program (.pt2), checked against eager",
        description="Export a model file or checkpoint (eval mode, dynamic batch axis). ONNX files carry the "
        "model file's metadata (its spec, and its preprocessing where recorded) in metadata_props. The written "
        "file is run (onnxruntime / the loaded program) and compared with the eager network; a difference "
        "beyond the tolerance is an error. Needs pip install 'reslab[deploy]' for ONNX.",
    )
    export.add_argument("model", help="a model file (model.safetensors) or checkpoint")
    export.add_argument("--format", choices=["onnx", "pt2"], help="default: from --out's suffix")
    export.add_argument("--out", required=True, help="the file to write (.onnx or .pt2)")
    export.add_argument("--input-size", type=parse_input_size, metavar="C,H,W",
                        help="image shape (default: 224 px for ImageNet stems, else 32)")
    export.add_argument("--exporter", choices=["dynamo", "torchscript"], default="dynamo",
                        help="ONNX exporter: torch.export-based (default) or the legacy TorchScript one (faster)")
    export.add_argument("--features-only", action="store_true", help="export the feature backbone")
    export.add_argument("--out-indices", type=lambda s: tuple(int(i) for i in s.split(",")), metavar="I,J",
                        help="with --features-only: which maps (0 = stem, i = stage i)")
    export.set_defaults(func=cmd_export)

    quant = subparsers.add_parser(
        "quantize",
        help="static int8 ONNX (onnxruntime QDQ), with accuracy, size and latency against fp32",
        description="Quantise a model to int8 (per-channel weights), calibrated on training images of the "
        "run it came from (its config.yaml) or of --data; print fp32 and int8 test accuracy, file sizes and "
        "batch-1/batch-64 latency of eager fp32, onnxruntime fp32 and onnxruntime int8 (interleaved).",
    )
    quant.add_argument("model", help="a model file (model.safetensors) or checkpoint")
    quant.add_argument("--out", required=True, help="the int8 .onnx file to write")
    quant.add_argument("--calib-images", type=int, default=512, help="calibration images (default 512)")
    quant.add_argument("--calib-method", choices=["minmax", "entropy", "percentile"], default="minmax")
    quant.add_argument("--data", help="dataset name (default: the model's run config)")
    quant.add_argument("--config", type=Path, help="config whose data section to use")
    quant.add_argument("--set", "-s", action="append", metavar="KEY=VALUE", help="e.g. data.data_dir=...")
    quant.add_argument("--exporter", choices=["dynamo", "torchscript"], default="dynamo")
    quant.add_argument("--threads", type=int, help="threads for every engine (default: torch's)")
    quant.add_argument("--rounds", type=int, default=20, help="latency rounds (default 20)")
    quant.set_defaults(func=cmd_quantize)
