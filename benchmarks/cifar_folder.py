"""The CIFAR-10 image folder from ``../shared/data``, unpacked once for the evidence scripts."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

CIFAR_TAR = Path(__file__).resolve().parents[2] / "shared" / "data" / "cifar10-jpg" / "cifar10-jpg.tar.gz"


def unpack_cifar(root: Path) -> Path:
    """The CIFAR-10 image folder (train/<class>, test/<class>) at ``root``, unpacked there once (a marker
    file says the unpacking finished, so an interrupted one starts again)."""
    done = root / ".unpacked"
    if not done.is_file():
        if not CIFAR_TAR.is_file():
            sys.exit(f"{CIFAR_TAR} is missing (see ../shared/data/README.md)")
        shutil.rmtree(root, ignore_errors=True)
        root.mkdir(parents=True)
        subprocess.run(["tar", "xzf", str(CIFAR_TAR), "-C", str(root)], check=True)
        done.write_text("ok\n")
    return root
