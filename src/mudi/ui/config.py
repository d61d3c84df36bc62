"""``UiConfig`` (``mudi ui``): where the web UI keeps its work and where it listens. Imports no gradio."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from mudi.adapters import registry
from mudi.errors import MudiError
from mudi.segmentation.config import parse_backend

LOOPBACK_HOSTS = ("127.0.0.1", "localhost", "::1")
#: The model choice of mudi's toy model (no registered backbone: sd15 from the shipped folder; ui/toy.py).
TOY_CHOICE = "toyworld"


@dataclass
class UiConfig:
    workspace: str = field(default="mudi-ui", metadata={
        "help": "the UI's folder: subjects/, runs/ (ordinary `mudi train` run folders) and generations/"})
    host: str = field(default="127.0.0.1", metadata={
        "help": "address to listen on; the default is this machine only (0.0.0.0 = every network interface, "
                "without a password)"})
    port: int = field(default=7860, metadata={"help": "port to listen on"})
    share: bool = field(default=False, metadata={
        "help": "also open a public gradio.live link (needs the internet; anyone with the link can use the UI)"})
    backbone: str = field(default="sdxl", metadata={
        "help": f"default model family of new training runs: {TOY_CHOICE} (mudi's toy model: offline, CPU, judged "
                f"by the toy world's checker), {', '.join(registry.names('backbone'))} (tiny-*: offline, random "
                "weights: the images are noise)"})
    backend: str = field(default="owlv2+sam", metadata={
        "help": "default segmentation backend: owlv2+sam (paper), owlv2+grabcut, grabcut (offline, no weights)"})
    allowed_hosts: list[str] = field(default_factory=list, metadata={
        "help": "extra host names the page may be reached by (the Host and Origin headers; loopback names always "
                "pass). Only with --host other than loopback or --share, which also require the access token"})
    token: str = field(default="", metadata={
        "help": "access token (the password of user 'mudi') when serving beyond this machine; default: "
                "$MUDI_UI_TOKEN, else a random one printed at start"})
    max_upload_mb: int = field(default=50, metadata={"help": "largest file a page may upload, in MiB"})
    device: Literal["auto", "cpu"] = field(default="auto", metadata={
        "help": "auto (the GPU when there is one) or cpu, for training, segmentation, generation and scoring"})

    def __post_init__(self) -> None:
        if not self.workspace.strip():
            raise MudiError("--workspace is empty; give a folder, e.g. mudi-ui")
        if not self.host.strip():
            raise MudiError("--host is empty; give an address, e.g. 127.0.0.1")
        if not 1 <= self.port <= 65535:
            raise MudiError(f"--port {self.port} must be in 1..65535, e.g. 7860")
        if self.max_upload_mb < 1:
            raise MudiError(f"--max_upload_mb {self.max_upload_mb} must be >= 1")
        if self.allowed_hosts and self.is_local:
            raise MudiError("--allowed_hosts only applies when serving beyond this machine (--host 0.0.0.0 or "
                            "--share); on 127.0.0.1 only loopback names can reach the UI")
        if self.backbone != TOY_CHOICE:
            registry.check("backbone", [self.backbone])
        parse_backend(self.backend)

    @property
    def is_local(self) -> bool:
        """Whether only this machine can reach the UI."""
        return self.host in LOOPBACK_HOSTS and not self.share
