"""int8 (onnxruntime static QDQ) against fp32, side by side in one run: file size, batch-1 and batch-64
latency (int8 vs eager fp32 and vs onnxruntime fp32), and accuracy.

* ResNet-20 from a model file (e.g. trained on CIFAR-10 by ``reslab train``): accuracy on its run's test split;
* ResNet-50 at 224 px with random weights (latency and size only; calibrated on random images).

    .venv/bin/python benchmarks/bench_deploy.py --model runs/cifar10_resnet20/model.safetensors

Latencies are medians over interleaved rounds (every engine once per round), one thread each by default.
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import numpy as np
import torch

import reslab
from reslab.data import load_data
from reslab.deploy.export import export, load_for_export
from reslab.deploy.measure import accuracy, eager_runner, file_size, latency, onnx_runner
from reslab.deploy.quantize import calibration_images, quantize_onnx
from reslab.train.config import checkpoint_config


def compare(name: str, model: torch.nn.Module, shape: tuple[int, int, int], calibration: list[np.ndarray],
            test, rounds: int, threads: int, tmp: Path) -> None:
    fp32, int8 = tmp / f"{name}_fp32.onnx", tmp / f"{name}_int8.onnx"
    export(model, fp32, input_shape=shape)
    quantize_onnx(fp32, int8, calibration)
    runners = {"eager": eager_runner(model), "ort_fp32": onnx_runner(fp32, threads),
               "ort_int8": onnx_runner(int8, threads)}
    gen = np.random.default_rng(0)
    batch = gen.standard_normal((64, *shape)).astype(np.float32)
    lat1 = latency(runners, batch[:1], rounds=rounds, calls=5)
    lat64 = latency(runners, batch, rounds=max(3, rounds // 4))
    print(f"\n{name} ({threads} thread(s), medians of interleaved rounds)")
    print(f"  size fp32 ONNX {file_size(fp32) / 1e6:.2f} MB, int8 {file_size(int8) / 1e6:.2f} MB: "
          f"{file_size(fp32) / file_size(int8):.2f}x smaller")
    for label, lat in (("batch 1", lat1), ("batch 64", lat64)):
        ms = " / ".join(f"{k} {1e3 * v:.2f} ms" for k, v in lat.items())
        print(f"  {label}: {ms}; int8 speed-up vs eager fp32 {lat['eager'] / lat['ort_int8']:.2f}x, "
              f"vs onnxruntime fp32 {lat['ort_fp32'] / lat['ort_int8']:.2f}x")
    if test is not None:
        preds = accuracy({"fp32": runners["eager"], "int8": runners["ort_int8"]}, test)
        acc = {k: 100 * float((preds[k] == preds["labels"]).mean()) for k in ("fp32", "int8")}
        print(f"  accuracy ({len(preds['labels'])} test images): fp32 {acc['fp32']:.2f} %, int8 {acc['int8']:.2f} % "
              f"({acc['int8'] - acc['fp32']:+.2f} points)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", type=Path, required=True, help="a trained ResNet-20 model file")
    parser.add_argument("--calib-images", type=int, default=512)
    parser.add_argument("--rounds", type=int, default=40)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    config = checkpoint_config(args.model)
    data = load_data(config.data, seed=config.seed)
    with tempfile.TemporaryDirectory() as tmp:
        calib = calibration_images(data.train, args.calib_images)
        compare("trained", load_for_export(args.model), (data.in_chans, data.image_size, data.image_size), calib,
                data.test, args.rounds, args.threads, Path(tmp))
        gen = np.random.default_rng(0)
        calib50 = [gen.standard_normal((16, 3, 224, 224)).astype(np.float32) for _ in range(2)]
        compare("resnet50 (random weights, 224 px)", reslab.create_model("resnet50").eval(), (3, 224, 224),
                calib50, None, max(5, args.rounds // 8), args.threads, Path(tmp))


if __name__ == "__main__":
    main()
