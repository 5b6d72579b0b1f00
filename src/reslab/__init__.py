"""reslab: residual networks for image classification."""

from .lazy import lazy_exports

__version__ = "0.1.0"

# Imported on first use: the command line's --help and config checks do not need torch.
lazy_exports(
    __name__,
    {
        ".build": ["FeatureNet", "ResNet", "build"],
        ".io": ["load", "save"],
        ".spec": ["BlockSpec", "HeadSpec", "NetSpec", "SpecError", "StemSpec"],
        ".zoo": ["create_model", "list_models", "make_spec", "model_spec"],
    },
)

__all__ = [
    "BlockSpec", "FeatureNet", "HeadSpec", "NetSpec", "ResNet", "SpecError", "StemSpec", "build",
    "create_model", "list_models", "load", "make_spec", "model_spec", "save",
]
