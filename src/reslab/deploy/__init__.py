"""Deployment: knowledge distillation (a training hook), export to ONNX and torch.export, int8 quantisation.

``distill`` needs only torch. ``export`` and ``quantize`` need the optional ``onnx``/``onnxruntime`` packages
(``pip install 'reslab[deploy]'``), imported only when they run.
"""

from .errors import DeployError

__all__ = ["DeployError"]
