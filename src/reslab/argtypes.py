"""Argument types shared by the commands (``reslab models``, ``reslab export``); no torch, so ``--help`` stays fast."""

from __future__ import annotations

import argparse


def parse_input_size(text: str) -> tuple[int, int, int]:
    """``C,H,W`` (or ``CxHxW``), or one side ``S`` for ``3,S,S``."""
    try:
        parts = [int(p) for p in text.replace("x", ",").split(",")]
    except ValueError:
        parts = []
    if len(parts) == 1:
        parts = [3, parts[0], parts[0]]
    if len(parts) != 3 or min(parts) < 1:
        raise argparse.ArgumentTypeError(f"expected C,H,W (e.g. 3,32,32) or a side (32), got {text!r}")
    return parts[0], parts[1], parts[2]
