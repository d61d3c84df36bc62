"""The versions and devices a bug report needs (``mudi env``, and the versions recorded with every output)."""

from __future__ import annotations

import importlib.metadata
import platform
import sys
from collections.abc import Sequence

from mudi import __version__

PACKAGES = ("torch", "diffusers", "transformers", "peft", "accelerate", "safetensors", "numpy", "pillow",
            "opencv-python-headless", "scipy", "bitsandbytes", "dreamsim", "image-reward")


#: The packages whose versions every output records.
RECORDED = ("mudi", "torch", "diffusers", "transformers", "peft")


def package_versions(packages: Sequence[str] = RECORDED) -> dict[str, str | None]:
    """``{package: version or None}`` of installed distributions."""
    out: dict[str, str | None] = {}
    for pkg in packages:
        try:
            out[pkg] = importlib.metadata.version(pkg)
        except importlib.metadata.PackageNotFoundError:
            out[pkg] = None
    return out


def collect() -> dict:
    info: dict = {"mudi": __version__, "python": sys.version.split()[0], "platform": platform.platform()}
    info.update(package_versions(PACKAGES))
    try:
        import torch

        info["cuda_available"] = torch.cuda.is_available()
        info["torch_cuda"] = torch.version.cuda
        info["devices"] = ([torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
                           if torch.cuda.is_available() else ["cpu"])
        info["mps_available"] = bool(getattr(torch.backends, "mps", None) and torch.backends.mps.is_available())
        info["num_threads"] = torch.get_num_threads()
    except ImportError:
        info["devices"] = ["torch not installed"]
    return info
