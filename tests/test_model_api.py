"""timm's and torchvision's model API on reslab networks: the classifier, FeatureInfo, negative out_indices,
FeatureNet in torchvision's detection stack; and save() keeping module and spec together."""

from __future__ import annotations

from collections import OrderedDict

import pytest
import torch
from torch import nn
from torchvision.models.detection import FasterRCNN
from torchvision.models.detection.anchor_utils import AnchorGenerator
from torchvision.ops import FeaturePyramidNetwork, MultiScaleRoIAlign

import reslab
from reslab.spec import SpecError


def test_reset_classifier_edits_module_and_spec_together(tmp_path):
    model = reslab.create_model("resnet20", num_classes=10)
    assert model.num_features == 64 and model.get_classifier() is model.fc
    model.reset_classifier(3)
    assert model.spec.num_classes == 3 and model.get_classifier().out_features == 3
    x = torch.randn(2, 3, 32, 32)
    model.eval()
    feats = model.forward_features(x)
    pooled = model.forward_head(feats, pre_logits=True)
    assert feats.shape == (2, 64, 8, 8) and pooled.shape == (2, 64)
    torch.testing.assert_close(model.forward_head(feats), model.fc(pooled))
    reslab.save(model, tmp_path / "m.safetensors")
    torch.testing.assert_close(reslab.load(tmp_path / "m.safetensors").eval()(x), model(x))
    with pytest.raises(SpecError, match="num_classes must be a positive integer, got 0"):
        model.reset_classifier(0)


def test_save_derives_the_spec_of_a_replaced_head_and_refuses_what_no_spec_describes(tmp_path):
    model = reslab.create_model("resnet18", num_classes=1000)
    model.fc = nn.Linear(512, 7)  # the torchvision idiom
    reslab.save(model, tmp_path / "derived.safetensors")
    assert model.spec.num_classes == 7
    assert reslab.load(tmp_path / "derived.safetensors").fc.out_features == 7
    model.fc = nn.Sequential(nn.Dropout(0.1), nn.Linear(512, 7))
    with pytest.raises(SpecError, match=r"the spec has 'fc.weight', the module not.*reset_classifier.*nothing was "
                                        r"written"):
        reslab.save(model, tmp_path / "refused.safetensors")
    assert not (tmp_path / "refused.safetensors").exists()


def test_feature_info_and_negative_out_indices():
    backbone = reslab.create_model("resnet50", features_only=True, out_indices=(-3, -1))
    info = backbone.feature_info
    assert info.channels() == [512, 2048] and info.reduction() == [8, 32]
    assert info.module_name() == ["layer2", "layer4"] and info.channels(-1) == 2048 == backbone.out_channels
    assert [d["num_chs"] for d in info] == [512, 2048] and len(info) == 2
    feats = backbone.eval()(torch.randn(1, 3, 64, 64))
    assert [f.shape[1] for f in feats] == info.channels()
    with pytest.raises(ValueError, match="out_indices: -6 is out of range"):
        reslab.create_model("resnet50", features_only=True, out_indices=(-6,))


def test_feature_pyramid_network_takes_the_dict_output():
    backbone = reslab.create_model("resnet14", features_only=True, out_indices=(1, 2, 3), as_dict=True).eval()
    fpn = FeaturePyramidNetwork(backbone.feature_info.channels(), out_channels=16)
    feats = backbone(torch.randn(2, 3, 32, 32))
    assert isinstance(feats, OrderedDict) and list(feats) == ["0", "1", "2"]
    out = fpn(feats)
    assert [v.shape for v in out.values()] == [(2, 16, 32, 32), (2, 16, 16, 16), (2, 16, 8, 8)]


def test_faster_rcnn_trains_a_step_on_a_reslab_backbone():
    torch.manual_seed(0)
    backbone = reslab.create_model("resnet8", features_only=True, out_indices=(-1,), as_dict=True)
    assert backbone.out_channels == 64
    detector = FasterRCNN(
        backbone, num_classes=3, min_size=64, max_size=64,
        rpn_anchor_generator=AnchorGenerator(sizes=((16, 32),), aspect_ratios=((0.5, 1.0, 2.0),)),
        box_roi_pool=MultiScaleRoIAlign(featmap_names=["0"], output_size=7, sampling_ratio=2),
    )
    images = [torch.rand(3, 64, 64), torch.rand(3, 56, 72)]
    targets = [{"boxes": torch.tensor([[4.0, 4.0, 30.0, 40.0]]), "labels": torch.tensor([1])},
               {"boxes": torch.tensor([[10.0, 8.0, 50.0, 30.0], [2.0, 2.0, 20.0, 20.0]]),
                "labels": torch.tensor([2, 1])}]
    optimizer = torch.optim.SGD(detector.parameters(), lr=0.01)
    detector.train()
    losses = detector(images, targets)
    assert set(losses) == {"loss_classifier", "loss_box_reg", "loss_objectness", "loss_rpn_box_reg"}
    total = sum(losses.values())
    assert torch.isfinite(total)
    before = backbone.layer3[0].conv1.weight.detach().clone()
    optimizer.zero_grad()
    total.backward()
    optimizer.step()
    assert not torch.equal(before, backbone.layer3[0].conv1.weight)
    detector.eval()
    with torch.no_grad():
        (found,) = detector([torch.rand(3, 64, 64)])
    assert set(found) == {"boxes", "labels", "scores"}


def test_frozen_batch_norm_and_dilation_as_torchvision_has_them(tmp_path):
    from torchvision.models import resnet50
    from torchvision.ops import FrozenBatchNorm2d

    options = {"replace_stride_with_dilation": [False, True, True], "norm_layer": FrozenBatchNorm2d}
    theirs = resnet50(**options).eval()
    with torch.no_grad():
        for name, buffer in theirs.named_buffers():
            if name.endswith("running_mean"):
                buffer.normal_(0, 0.1)
    ours = reslab.create_model("resnet50", **options).eval()
    ours.load_state_dict(theirs.state_dict(), strict=True)
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(ours(x), theirs(x), rtol=0, atol=0)
    spec = ours.spec
    assert spec.norm == "frozen_batch" and [b.dilation for b in spec.stages[3]] == [2, 4, 4]
    assert reslab.NetSpec.from_json(spec.to_json()) == spec
    reslab.save(ours, tmp_path / "det.safetensors")
    with torch.no_grad():
        torch.testing.assert_close(reslab.load(tmp_path / "det.safetensors").eval()(x), theirs(x), rtol=0, atol=0)
    backbone = reslab.create_model("resnet50", features_only=True, **options)
    assert backbone.feature_info.reduction() == [2, 4, 8, 8, 8]
    with pytest.raises(SpecError, match="dilation needs bottleneck blocks"):
        reslab.create_model("resnet18", replace_stride_with_dilation=[False, False, True])
    with pytest.raises(SpecError, match="only for the ImageNet ResNets"):
        reslab.create_model("resnet20", replace_stride_with_dilation=[False, False, True])
