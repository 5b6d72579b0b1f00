"""``reslab export`` (ONNX, torch.export) and ``reslab quantize`` (int8 ONNX): every zoo family, every
drop-path kind, feature backbones and ResBuilder-edited networks; and one clear error for bad input."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch

import reslab
from reslab import cli
from reslab.deploy.errors import DeployError
from reslab.deploy.export import export, onnx_session
from reslab.deploy.measure import onnx_runner
from reslab.io import SPEC_KEY, save_state
from reslab.spec import NetSpec
from reslab.train import Trainer, load_config

FOUND_SPEC = Path(__file__).parents[1] / "docs" / "deploy" / "resbuilder_found_spec.json"
# One model per family and block kind (the zoo is stacks of these); ImageNet stems at 32 px to stay fast.
FAMILIES = ["resnet8", "resnet20_b", "plain_resnet8", "resnet18", "wrn10_2", "pyramidnet20_a48",
            "pyramidnet29_a48_bottleneck"]


def trained_like(model: torch.nn.Module, seed: int = 0) -> torch.nn.Module:
    """Random BN statistics and affine parameters, so eval-mode BN is not the identity."""
    gen = torch.Generator().manual_seed(seed)
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.copy_(0.1 * torch.randn(m.num_features, generator=gen))
            m.running_var.copy_(0.5 + torch.rand(m.num_features, generator=gen))
            m.weight.data.copy_(0.5 + torch.rand(m.num_features, generator=gen))
            m.bias.data.copy_(0.1 * torch.randn(m.num_features, generator=gen))
    return model.eval()


def check_onnx(path: Path, model: torch.nn.Module, shape: tuple[int, int, int]) -> None:
    """onnxruntime matches eager at batch sizes 1 and 5 (the batch axis is dynamic)."""
    run = onnx_runner(path)
    for n in (1, 5):
        x = torch.randn(n, *shape)
        with torch.no_grad():
            np.testing.assert_allclose(run(x.numpy()), model(x).numpy(), rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("fmt", ["onnx", "pt2"])
@pytest.mark.parametrize("name", FAMILIES)
def test_every_family_exports_and_matches(name, fmt, tmp_path):
    torch.manual_seed(0)
    model = trained_like(reslab.create_model(name, num_classes=3))
    result = export(model, tmp_path / f"m.{fmt}", format=fmt, input_shape=(3, 32, 32), exporter="torchscript")
    assert result.max_error < 1e-4
    if fmt == "onnx":
        check_onnx(result.path, model, (3, 32, 32))
    else:
        program = torch.export.load(str(result.path)).module()
        x = torch.randn(4, 3, 32, 32)
        with torch.no_grad():
            torch.testing.assert_close(program(x), model(x))


@pytest.mark.parametrize("drop", ["stochastic_depth", "separated", "shakedrop"])
def test_drop_path_kinds_export_their_eval_mode(drop, tmp_path):
    model = trained_like(reslab.create_model("pyramidnet20_a48", num_classes=4, drop_path=drop, final_survival=0.5))
    for fmt in ("onnx", "pt2"):
        export(model, tmp_path / f"m.{fmt}", format=fmt, input_shape=(3, 16, 16), exporter="torchscript")
    check_onnx(tmp_path / "m.onnx", model, (3, 16, 16))


def test_the_default_exporter_on_a_resbuilder_network_with_metadata(tmp_path, capsys):
    # The network a `reslab build` run found (a half-width inserted block), saved with an extra metadata key
    # such as a preprocessing contract: the ONNX file carries the spec and that key.
    spec = NetSpec.load(FOUND_SPEC)
    model = trained_like(reslab.build(spec))
    model_file = tmp_path / "found.safetensors"
    save_state(model_file, model.state_dict(), {SPEC_KEY: spec.to_json(indent=None), "reslab.mean": "[0.5]"})
    out = tmp_path / "found.onnx"
    assert cli.main(["export", str(model_file), "--out", str(out)]) == 0  # dynamo, the default
    assert "onnxruntime matches eager on a batch of 3" in capsys.readouterr().out
    meta = {p.key: p.value for p in onnx.load(str(out)).metadata_props}
    assert NetSpec.from_json(meta[SPEC_KEY]) == spec
    assert meta["reslab.mean"] == "[0.5]" and json.loads(meta["reslab.input_shape"]) == [3, 32, 32]
    check_onnx(out, model, (3, 32, 32))


def test_a_feature_backbone_exports_its_maps(tmp_path, capsys):
    model = trained_like(reslab.create_model("resnet14", num_classes=5))
    reslab.save(model, tmp_path / "m.safetensors")
    backbone = reslab.build(model.spec, features_only=True, out_indices=(1, 3))
    backbone.load_state_dict({k: v for k, v in model.state_dict().items() if not k.startswith("fc.")})
    backbone.eval()
    for fmt in ("onnx", "pt2"):
        assert cli.main(["export", str(tmp_path / "m.safetensors"), "--out", str(tmp_path / f"f.{fmt}"),
                         "--features-only", "--out-indices", "1,3", "--exporter", "torchscript"]) == 0
    session = onnx_session(tmp_path / "f.onnx")
    assert [o.name for o in session.get_outputs()] == ["features_1", "features_3"]
    x = torch.randn(2, 3, 32, 32)
    got = session.run(None, {"input": x.numpy()})
    with torch.no_grad():
        for g, e in zip(got, backbone(x), strict=True):
            np.testing.assert_allclose(g, e.numpy(), rtol=1e-4, atol=1e-4)


def test_a_file_that_does_not_match_beyond_the_tolerance_is_removed(tmp_path):
    model = trained_like(reslab.create_model("resnet8", num_classes=3))
    with pytest.raises(DeployError, match="differs from the eager network by .* the file was removed"):
        export(model, tmp_path / "m.onnx", input_shape=(3, 16, 16), exporter="torchscript", tolerance=0.0)
    assert not (tmp_path / "m.onnx").exists()


def test_bad_inputs_give_one_clear_error(tmp_path, capsys):
    model = reslab.create_model("resnet8", num_classes=3)
    good = tmp_path / "m.safetensors"
    reslab.save(model, good)
    corrupt = tmp_path / "corrupt.safetensors"
    corrupt.write_bytes(good.read_bytes()[:500])
    mismatched = tmp_path / "mismatched.safetensors"  # resnet14's weights under resnet8's spec
    save_state(mismatched, reslab.create_model("resnet14", num_classes=3).state_dict(),
               {SPEC_KEY: model.spec.to_json(indent=None)})
    cases = [
        (["export", str(corrupt), "--out", str(tmp_path / "x.onnx")], f"{corrupt}: not a readable safetensors"),
        (["export", str(mismatched), "--out", str(tmp_path / "x.pt2")], "weights do not match the spec"),
        (["export", str(good), "--out", str(tmp_path / "x.pt2"), "--format", "onnx"], "matching --format"),
        (["export", str(tmp_path / "nope.safetensors"), "--out", str(tmp_path / "x.onnx")], "no such model file"),
        (["quantize", str(corrupt), "--out", str(tmp_path / "q.onnx")], f"{corrupt}: not a readable"),
        (["quantize", str(good), "--out", str(tmp_path / "q.pt2")], "give a .onnx name"),
    ]
    for argv, message in cases:
        assert cli.main(argv) == 1, argv
        err = capsys.readouterr().err.strip()
        assert err.startswith(f"reslab {argv[0]}: error: ") and message in err and "\n" not in err, err
    assert not list(tmp_path.glob("x.*")) and not list(tmp_path.glob("q.*"))


def test_without_the_deploy_extra_the_error_says_how_to_install_it(tmp_path, monkeypatch, capsys):
    reslab.save(reslab.create_model("resnet8", num_classes=3), tmp_path / "m.safetensors")
    monkeypatch.setitem(sys.modules, "onnx", None)  # import onnx now raises ImportError
    assert cli.main(["export", str(tmp_path / "m.safetensors"), "--out", str(tmp_path / "m.onnx")]) == 1
    assert "pip install 'reslab[deploy]'" in capsys.readouterr().err


@pytest.fixture(scope="module")
def digits_run(tmp_path_factory) -> Path:
    """A resnet8 trained briefly on digits: its run folder (model.safetensors + config.yaml)."""
    run = tmp_path_factory.mktemp("quant") / "run"
    config = load_config(None, ["train.epochs=4", "train.batch_size=64", "data.train_per_class=60",
                                "train.progress=none", "output.tensorboard=false", "optim.lr=0.05"])
    Trainer(config, run_dir=run).fit()
    return run


def test_quantize_writes_an_int8_model_close_to_fp32(digits_run, tmp_path, capsys):
    out = tmp_path / "int8.onnx"
    assert cli.main(["quantize", str(digits_run / "model.safetensors"), "--out", str(out), "--calib-images", "128",
                     "--exporter", "torchscript", "--rounds", "2", "--threads", "1"]) == 0
    text = capsys.readouterr().out
    acc = {k: float(text.split(k)[1].split("%")[0]) for k in ("eager fp32", "onnxruntime fp32", "onnxruntime int8")}
    assert acc["eager fp32"] == acc["onnxruntime fp32"] and abs(acc["onnxruntime int8"] - acc["eager fp32"]) < 3
    assert "batch 64" in text and "smaller" in text and "on 128 digits train images" in text
    proto = onnx.load(str(out))
    ops = {n.op_type for n in proto.graph.node}
    assert {"QuantizeLinear", "DequantizeLinear"} <= ops
    # per-channel weights: a convolution's weight scale has one entry per output channel
    scales = {i.name: i for i in proto.graph.initializer}
    per_channel = [n for n in proto.graph.node if n.op_type == "DequantizeLinear"
                   and len(onnx.numpy_helper.to_array(scales[n.input[1]]).shape) == 1
                   and onnx.numpy_helper.to_array(scales[n.input[1]]).size > 1]
    assert per_channel
    meta = {p.key: p.value for p in proto.metadata_props}
    assert NetSpec.from_json(meta[SPEC_KEY]).name == "resnet8" and "int8" in meta["reslab.quantization"]
    assert out.stat().st_size < 0.5 * (digits_run / "model.safetensors").stat().st_size
    x = np.random.default_rng(0).standard_normal((3, 1, 8, 8)).astype(np.float32)
    assert onnx_runner(out)(x).shape == (3, 10)  # plain onnxruntime runs it, at any batch size


def test_quantize_refuses_data_the_model_was_not_made_for(digits_run, tmp_path, capsys, write_image):
    for cls in ("a", "b"):
        for i in range(3):
            write_image(tmp_path / "rgb" / "train" / cls / f"{i}.png", torch.randint(0, 255, (3, 8, 8),
                                                                                     dtype=torch.uint8))
            write_image(tmp_path / "rgb" / "test" / cls / f"{i}.png", torch.randint(0, 255, (3, 8, 8),
                                                                                    dtype=torch.uint8))
    assert cli.main(["quantize", str(digits_run / "model.safetensors"), "--out", str(tmp_path / "q.onnx"),
                     "--data", "imagefolder", "--set", f"data.data_dir={tmp_path / 'rgb'}"]) == 1
    err = capsys.readouterr().err.strip()
    assert "1-channel images and 10 classes" in err and "3 channel(s) and 2 classes" in err and "\n" not in err
    assert not (tmp_path / "q.onnx").exists()
