"""Spec to module: ``build(spec)`` is the only way a network is made."""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from .layers.blocks import ResidualBlock, make_block
from .layers.norm import NORM_LAYERS
from .spec import NetSpec, SpecError

CLASSIFIER = "fc"  # the classifier's module name (torchvision's and timm's ResNets too)


class ResNet(nn.Module):
    """A residual (or plain) network built from a ``NetSpec``.

    Modules are named as in torchvision (``conv1``, ``bn1``, ``layer1``..``layerN``, ``fc``); pre-activation
    networks add ``final_bn`` before pooling. ``self.spec`` describes the module exactly.
    """

    def __init__(self, spec: NetSpec) -> None:
        super().__init__()
        self.spec = spec
        stem = spec.stem
        norm_layer = NORM_LAYERS[spec.norm]
        if stem.kind == "conv7_maxpool":
            self.conv1 = nn.Conv2d(stem.in_chans, stem.out_chans, 7, stride=2, padding=3, bias=False)
        else:
            self.conv1 = nn.Conv2d(stem.in_chans, stem.out_chans, 3, stride=1, padding=1, bias=False)
        self.bn1 = norm_layer(stem.out_chans) if stem.norm else nn.Identity()
        self.relu = nn.ReLU(inplace=True) if stem.act else nn.Identity()
        self.maxpool = nn.MaxPool2d(3, stride=2, padding=1) if stem.kind == "conv7_maxpool" else nn.Identity()
        self.stage_names = [f"layer{i + 1}" for i in range(len(spec.stages))]
        for name, stage in zip(self.stage_names, spec.stages):
            self.add_module(name, nn.Sequential(*[make_block(b, norm_layer) for b in stage]))
        self.final_bn = norm_layer(spec.head.in_chans) if spec.head.norm else None
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.head_drop = nn.Dropout(spec.head.dropout) if spec.head.dropout > 0 else nn.Identity()
        self.fc = nn.Linear(spec.head.in_chans, spec.head.num_classes)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        # torchvision's initialisation (He normal, fan-out; BN scale 1, shift 0).
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)

    def zero_init_residual(self) -> None:
        """Start every block as its shortcut (Goyal et al. 2017); plain blocks are left alone."""
        for block in self.blocks():
            if block.downsample is not None:
                block.zero_init_()

    def stages(self) -> list[nn.Sequential]:
        return [getattr(self, name) for name in self.stage_names]

    def blocks(self) -> list[ResidualBlock]:
        return [block for stage in self.stages() for block in stage]

    def forward_stem(self, x: torch.Tensor) -> torch.Tensor:
        return self.maxpool(self.stem_act(x))

    def stem_act(self, x: torch.Tensor) -> torch.Tensor:
        """The stem before its max-pool (timm's feature index 0)."""
        return self.relu(self.bn1(self.conv1(x)))

    def finish_features(self, x: torch.Tensor) -> torch.Tensor:
        """The final BN-ReLU of pre-activation networks (identity for post-activation ones)."""
        return torch.relu(self.final_bn(x)) if self.final_bn is not None else x

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        x = self.forward_stem(x)
        for stage in self.stages():
            x = stage(x)
        return self.finish_features(x)

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        """Pooling, dropout and the classifier on ``forward_features``' output; ``pre_logits``: stop before
        the classifier (the pooled ``num_features``-vector), as in timm."""
        # A mean over the pixels rather than pool + flatten: graph-tracing pruners (Torch-Pruning) then map the
        # classifier's inputs to channels one to one.
        x = self.head_drop(x.mean((2, 3)))
        return x if pre_logits else self.fc(x)

    # -- timm's classifier API; the spec follows every edit, so the network can still be saved --------------
    @property
    def num_features(self) -> int:
        """Channels of ``forward_features``' output (the classifier's input)."""
        return self.spec.head.in_chans

    def get_classifier(self) -> nn.Module:
        return getattr(self, CLASSIFIER)

    def reset_classifier(self, num_classes: int) -> None:
        """A new, freshly initialised classifier for ``num_classes`` classes; ``spec`` changes with it."""
        if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 1:
            raise SpecError(f"reset_classifier: num_classes must be a positive integer, got {num_classes!r} (for "
                            f"features use forward_features / forward_head(x, pre_logits=True))")
        old = self.get_classifier()
        self.spec = self.spec.with_classes(num_classes)
        setattr(self, CLASSIFIER, nn.Linear(self.num_features, num_classes).to(old.weight.device, old.weight.dtype))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))


class FeatureInfo:
    """What each returned feature map is, as timm's ``FeatureInfo``: ``channels()``, ``reduction()`` (stride
    from the input) and ``module_name()``, for all maps or the ``idx``-th one; iterating gives the dicts."""

    def __init__(self, entries: Sequence[dict[str, Any]]) -> None:
        self.info = [dict(e) for e in entries]
        self.out_indices = tuple(e["index"] for e in self.info)

    def get(self, key: str, idx: int | None = None) -> Any:
        return [e[key] for e in self.info] if idx is None else self.info[idx][key]

    def channels(self, idx: int | None = None) -> Any:
        return self.get("num_chs", idx)

    def reduction(self, idx: int | None = None) -> Any:
        return self.get("reduction", idx)

    def module_name(self, idx: int | None = None) -> Any:
        return self.get("module", idx)

    def get_dicts(self) -> list[dict[str, Any]]:
        return [dict(e) for e in self.info]

    def __getitem__(self, idx: int) -> dict[str, Any]:
        return self.info[idx]

    def __len__(self) -> int:
        return len(self.info)

    def __iter__(self):
        return iter(self.info)


class FeatureNet(ResNet):
    """Backbone returning feature maps, as timm's ``features_only``: index 0 is the stem output, index
    i >= 1 the output of stage i; negative indices count from the last stage (-1). ``feature_info`` says each
    map's channels and reduction. ``as_dict`` returns an ordered dict keyed "0", "1", ... and ``out_channels``
    is the last map's channels, which is what torchvision's detection models (FasterRCNN, FPN) expect."""

    def __init__(self, spec: NetSpec, out_indices: Sequence[int] | None = None, as_dict: bool = False) -> None:
        super().__init__(spec)
        del self.fc, self.head_drop, self.avgpool
        n = len(spec.stages)
        indices = tuple(range(n + 1)) if out_indices is None else tuple(out_indices)
        if not indices:
            raise ValueError("out_indices: give at least one feature map (0 is the stem, -1 the last stage)")
        for i in indices:
            if not -(n + 1) <= i <= n:
                raise ValueError(f"out_indices: {i} is out of range for {spec.name} (0..{n}: stem and "
                                 f"{n} stages, or -1..-{n + 1} from the last)")
        self.out_indices = tuple(sorted({i % (n + 1) for i in indices}))
        self.as_dict = as_dict
        chans = [spec.stem.out_chans, *spec.stage_channels()]
        reductions = [2 if spec.stem.kind == "conv7_maxpool" else 1, *spec.stage_reductions()]
        self.feature_info = FeatureInfo(
            {"index": i, "module": "stem" if i == 0 else self.stage_names[i - 1], "num_chs": chans[i],
             "reduction": reductions[i]}
            for i in self.out_indices
        )
        self.out_channels = self.feature_info.channels(-1)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor] | OrderedDict[str, torch.Tensor]:  # type: ignore[override]
        x = self.stem_act(x)
        feats = [x] if 0 in self.out_indices else []
        x = self.maxpool(x)
        last = len(self.stage_names)
        for i, stage in enumerate(self.stages(), start=1):
            if i > self.out_indices[-1]:
                break  # later stages feed no output
            x = stage(x)
            if i in self.out_indices:
                feats.append(self.finish_features(x) if i == last else x)
        return OrderedDict((str(k), f) for k, f in enumerate(feats)) if self.as_dict else feats


def build(spec: NetSpec, *, features_only: bool = False, out_indices: Sequence[int] | None = None,
          as_dict: bool = False) -> ResNet:
    """Build the network a spec describes (a classifier, or a feature backbone)."""
    if not isinstance(spec, NetSpec):
        raise TypeError(f"build() takes a NetSpec, got {type(spec).__name__}")
    if features_only:
        return FeatureNet(spec, out_indices, as_dict)
    if out_indices is not None or as_dict:
        raise ValueError("out_indices and as_dict are only used with features_only=True")
    return ResNet(spec)
