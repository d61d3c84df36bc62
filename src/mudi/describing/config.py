"""``DescribeConfig`` (``mudi describe``, and the ``describe:`` block of a run file)."""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from mudi.adapters import registry
from mudi.devices import check_dtype_name
from mudi.errors import MudiError


@dataclass
class DescribeConfig:
    subjects: list[str] = field(default_factory=list, metadata={
        "help": "native subject folders or folders of them: all the subjects of one run, described together"})
    provider: str = field(default="openai", metadata={
        "help": f"the describer, one of {', '.join(registry.names('describer'))} (openai: any OpenAI-compatible "
                "chat endpoint with image input; transformers: a local vision-language model; toyworld: the toy "
                "world's ground truth; docs/describe.md)"})
    url: str = field(default="", metadata={
        "help": "openai: the endpoint, e.g. https://api.openai.com/v1 or http://127.0.0.1:8000/v1 (vLLM, "
                "Ollama, LM Studio)"})
    model: str = field(default="gpt-4o", metadata={"help": "openai: the model name the endpoint serves"})
    api_key_env: str = field(default="MUDI_LLM_API_KEY", metadata={
        "help": "openai: the environment variable holding the API key (sent only over https or to this machine)"})
    pretrained_model_name_or_path: str | None = field(default=None, metadata={
        "help": "transformers: the checkpoint (hub id or local folder); default Qwen/Qwen2.5-VL-3B-Instruct"})
    timeout_s: float = field(default=120.0, metadata={"help": "openai: seconds to wait for one reply"})
    max_retries: int = field(default=2, metadata={
        "help": "ask again this many times for what a reply got wrong (bad JSON, a dropped identifier, ...)"})
    max_new_tokens: int = field(default=2048, metadata={"help": "the longest reply, in tokens"})
    max_side: int = field(default=512, metadata={"help": "photos are downscaled to this longer side before sending"})
    overwrite: bool = field(default=False, metadata={
        "help": "replace hand-written descriptive classes and captions too (they are kept by default)"})
    dry_run: bool = field(default=False, metadata={"help": "ask and report, write nothing"})
    device: str = field(default="auto", metadata={"help": "transformers: auto, cpu, cuda:0, ..."})
    dtype: str = field(default="auto", metadata={"help": "transformers: auto, float32, float16 or bfloat16"})

    def __post_init__(self) -> None:
        registry.check("describer", [self.provider])
        if not self.api_key_env.strip() or any(c in self.api_key_env for c in "= \t"):
            raise MudiError(f"api_key_env {self.api_key_env!r} must name an environment variable, e.g. "
                            "MUDI_LLM_API_KEY (never the key itself)")
        if not (math.isfinite(self.timeout_s) and self.timeout_s > 0):
            raise MudiError(f"timeout_s must be a positive number of seconds, got {self.timeout_s}")
        if not 0 <= self.max_retries <= 10:
            raise MudiError(f"max_retries must be in [0, 10], got {self.max_retries}")
        if self.max_new_tokens < 16:
            raise MudiError(f"max_new_tokens must be >= 16, got {self.max_new_tokens}")
        if self.max_side < 32:
            raise MudiError(f"max_side must be >= 32 pixels, got {self.max_side}")
        check_dtype_name(self.dtype)
