"""``mudi env``: the versions and devices a bug report needs."""

from __future__ import annotations

import argparse
import importlib.metadata
import json
import platform
import sys

from mudi import __version__

HELP = "print versions of mudi, python and the model libraries, and the available devices"

PACKAGES = ("torch", "diffusers", "transformers", "peft", "accelerate", "safetensors", "numpy", "pillow",
            "opencv-python-headless", "scipy", "bitsandbytes", "dreamsim", "image-reward")


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--json", action="store_true", help="print JSON instead of text")


def collect() -> dict:
    info: dict = {"mudi": __version__, "python": sys.version.split()[0], "platform": platform.platform()}
    for pkg in PACKAGES:
        try:
            info[pkg] = importlib.metadata.version(pkg)
        except importlib.metadata.PackageNotFoundError:
            info[pkg] = None
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


def main(args: argparse.Namespace) -> int:
    info = collect()
    if args.json:
        print(json.dumps(info, indent=2))
    else:
        for k, v in info.items():
            print(f"{k:24s} {v if v is not None else '-'}")
    return 0
