"""Describers: vision-language models that name each subject's descriptive class and caption its photos (paper
Sec. 4.1, 5.1, A.1: the authors asked GPT-4v).

One small contract, :class:`Describer`: ``describe(request) -> reply text``. The request holds every subject of
the run with its photos, so the model sees them together and can pick classes that tell them apart; the reply
is the JSON object of :data:`REPLY_EXAMPLE`, parsed and validated by :mod:`mudi.describing` (never here).

- :class:`OpenAIChatDescriber`: any OpenAI-compatible ``/chat/completions`` endpoint with image input (hosted,
  or local vLLM / Ollama / LM Studio). The caller reads the key from an environment variable and checks that it
  travels only over https or to this machine (:func:`mudi.sampling.layout_llm.check_key_transport`).
- :class:`TransformersDescriber`: a local ``transformers`` image-text-to-text model (``from_pretrained``; a
  one-line error when the checkpoint is absent); ``build_tiny`` makes a random LLaVA from configs for tests.

The toy world's own describer (it knows the ground truth) is :mod:`mudi.toyworld.describer`.
"""

from __future__ import annotations

import base64
import io
import json
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

import numpy as np
from PIL import Image

from mudi.errors import MudiError

#: ``transport(url, body, headers, timeout_s) -> response body``; replace it to test or add auth schemes.
Transport = Callable[[str, bytes, dict, float], bytes]
DEFAULT_VLM = "Qwen/Qwen2.5-VL-3B-Instruct"

REPLY_EXAMPLE = {"subjects": {"olis": {"descriptive_class": "weimaraner", "captions": {
    "00.jpg": "A photo of a olis weimaraner lying on a wooden deck, with a garden in the background."}}}}

INSTRUCTIONS = """\
You help personalize a text-to-image model on several subjects at once (the MuDI method). Each subject is \
named by a rare identifier word and shown in its reference photos below.

For each subject give:
1. "descriptive_class": a short noun phrase (1 to 4 words, lower case, no identifier) more specific than its \
class that tells it apart from the OTHER subjects listed here: a breed for two dogs ("weimaraner", \
"chow chow"), a colour or shape word for similar toys ("white robot toy"). Different subjects must get \
different descriptive classes.
2. "captions": one caption per photo, keyed by its file name, in this style: "A photo of a <identifier> \
<descriptive class> <the scene: place, pose, background, lighting>." Name "<identifier> <descriptive class>" \
exactly once and no other subject. Describe only the scene: never the subject's own colour, markings, \
shape or parts beyond the descriptive class.

Answer with one JSON object only, no other text, in this format:
"""


@dataclass
class SubjectPhotos:
    """One subject as the describer sees it: ``images`` are RGB ``(H, W, 3)`` uint8, one per ``file_names``."""

    identifier: str
    class_noun: str
    file_names: list[str]
    images: list[np.ndarray]


@dataclass
class DescribeRequest:
    """Every subject of the run; ``feedback`` lists what a previous reply got wrong (a retry), ``keep`` the
    descriptive classes already accepted (identifier → class) that the answer must reuse."""

    subjects: list[SubjectPhotos]
    feedback: list[str] = field(default_factory=list)
    keep: dict[str, str] = field(default_factory=dict)


@runtime_checkable
class Describer(Protocol):
    name: str

    def describe(self, request: DescribeRequest) -> str:
        """The model's reply text (meant to be the JSON of :data:`REPLY_EXAMPLE`)."""
        ...


def build_parts(request: DescribeRequest) -> list[str | np.ndarray]:
    """The message as text and images in order: instructions, then per subject a header and its photos, each
    after its file name; then the retry notes."""
    parts: list[str | np.ndarray] = [INSTRUCTIONS + json.dumps(REPLY_EXAMPLE)]
    for s in request.subjects:
        parts.append(f'\nSubject "{s.identifier}" (class: {s.class_noun}), {len(s.images)} photo(s):')
        for name, image in zip(s.file_names, s.images):
            parts += [f"\n{name}:", image]
    if request.keep:
        parts.append("\nKeep these descriptive classes exactly: " + json.dumps(request.keep))
    if request.feedback:
        parts.append("\nYour previous answer was rejected: " + "; ".join(request.feedback)
                     + ". Answer again with the complete JSON object.")
    return parts


def _jpeg_data_url(image: np.ndarray) -> str:
    buf = io.BytesIO()
    Image.fromarray(np.asarray(image, np.uint8)).convert("RGB").save(buf, format="JPEG", quality=90)
    return "data:image/jpeg;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


# ------------------------------------------------------------------------------------------ OpenAI-compatible
def _urllib_transport(url: str, body: bytes, headers: dict, timeout_s: float) -> bytes:
    req = urllib.request.Request(url, data=body, headers=headers, method="POST")
    with urllib.request.urlopen(req, timeout=timeout_s) as resp:  # noqa: S310 (the user gives the URL)
        return resp.read()


class OpenAIChatDescriber:
    """``POST endpoint`` (a full ``…/chat/completions`` URL) with the photos as ``image_url`` data URLs (JPEG),
    temperature 0. ``api_key`` is sent as a Bearer token: the caller reads it from the environment and checks
    the endpoint first (:func:`mudi.describing.describe.build_describer`)."""

    name = "openai"

    def __init__(self, endpoint: str, model: str = "gpt-4o", api_key: str | None = None, timeout_s: float = 120.0,
                 max_tokens: int = 2048, transport: Transport | None = None) -> None:
        self.endpoint, self.model, self.api_key = endpoint, model, api_key
        self.timeout_s, self.max_tokens = timeout_s, max_tokens
        self.transport = transport or _urllib_transport

    @classmethod
    def build(cls, url: str = "", model: str | None = None, api_key: str | None = None, timeout_s: float = 120.0,
              max_new_tokens: int = 2048) -> OpenAIChatDescriber:
        if not url:
            raise MudiError("the openai describer needs --url, e.g. https://api.openai.com/v1 or "
                            "http://127.0.0.1:8000/v1 (vLLM, Ollama, LM Studio)")
        return cls(url, model or "gpt-4o", api_key, timeout_s, max_new_tokens)

    def payload(self, request: DescribeRequest) -> dict:
        content = [{"type": "text", "text": p} if isinstance(p, str)
                   else {"type": "image_url", "image_url": {"url": _jpeg_data_url(p)}} for p in build_parts(request)]
        return {"model": self.model, "temperature": 0, "max_tokens": self.max_tokens,
                "messages": [{"role": "user", "content": content}]}

    def describe(self, request: DescribeRequest) -> str:
        headers = {"Content-Type": "application/json"}
        if self.api_key:
            headers["Authorization"] = f"Bearer {self.api_key}"
        body = json.dumps(self.payload(request)).encode("utf-8")
        try:
            raw = self.transport(self.endpoint, body, headers, self.timeout_s)
        except urllib.error.HTTPError as e:
            raise MudiError(f"{self.endpoint} answered HTTP {e.code} ({e.reason}); check the url, the model name "
                            "and the API key") from None
        except (urllib.error.URLError, OSError, TimeoutError) as e:
            raise MudiError(f"request to {self.endpoint} failed: {getattr(e, 'reason', e)}") from None
        try:
            content = json.loads(raw)["choices"][0]["message"]["content"]
        except (json.JSONDecodeError, UnicodeDecodeError, KeyError, IndexError, TypeError):
            raise MudiError(f"{self.endpoint} did not answer like an OpenAI chat completion: {raw[:120]!r}") from None
        if not isinstance(content, str):
            raise MudiError(f"{self.endpoint}: the reply's message content is not text: {str(content)[:120]!r}")
        return content


# ------------------------------------------------------------------------------------------ transformers VLM
class TransformersDescriber:
    """A local image-text-to-text model and its processor (chat template with ``{"type": "image"}`` parts);
    greedy decoding of at most ``max_new_tokens``."""

    name = "transformers"

    def __init__(self, model: Any, processor: Any, max_new_tokens: int = 2048) -> None:
        self.model, self.processor, self.max_new_tokens = model, processor, max_new_tokens

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path: str | None = None, device: Any = "cpu",
                        dtype: Any = None, max_new_tokens: int = 2048) -> TransformersDescriber:
        from transformers import AutoModelForImageTextToText, AutoProcessor

        from mudi.adapters.weights import missing_weights_error

        path = pretrained_model_name_or_path or DEFAULT_VLM
        try:
            processor = AutoProcessor.from_pretrained(path)
            model = AutoModelForImageTextToText.from_pretrained(path, dtype=dtype)
        except (OSError, ValueError) as e:
            raise missing_weights_error("vision-language", path, e, "--pretrained_model_name_or_path") from None
        return cls(model.to(device).eval(), processor, max_new_tokens)

    @classmethod
    def build_tiny(cls, device: Any = "cpu", dtype: Any = None, max_new_tokens: int = 32,
                   seed: int = 0) -> TransformersDescriber:
        """A random LLaVA (1-layer CLIP vision tower, 1-layer Llama) with a character tokenizer, built from configs
        in memory: the plumbing of the local path, no weights (its replies are noise)."""
        import torch
        from tokenizers import Tokenizer, decoders, models, pre_tokenizers
        from transformers import (
            CLIPImageProcessor,
            CLIPVisionConfig,
            LlamaConfig,
            LlavaConfig,
            LlavaForConditionalGeneration,
            LlavaProcessor,
            PreTrainedTokenizerFast,
        )

        vocab = {t: i for i, t in enumerate(["<unk>", "<s>", "</s>", "<image>", "<pad>"])}
        for c in map(chr, range(32, 127)):
            vocab.setdefault(c, len(vocab))
        tok = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
        tok.pre_tokenizer, tok.decoder = pre_tokenizers.Split("", "isolated"), decoders.Fuse()
        tokenizer = PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="<unk>", bos_token="<s>",
                                            eos_token="</s>", pad_token="<pad>")
        tokenizer.add_special_tokens({"additional_special_tokens": ["<image>"]})
        template = ("{% for m in messages %}{% for c in m['content'] %}{% if c['type'] == 'image' %}<image>"
                    "{% else %}{{ c['text'] }}{% endif %}{% endfor %}\n{% endfor %}"
                    "{% if add_generation_prompt %}A:{% endif %}")
        processor = LlavaProcessor(
            image_processor=CLIPImageProcessor(size={"shortest_edge": 16}, crop_size={"height": 16, "width": 16}),
            tokenizer=tokenizer, patch_size=8, vision_feature_select_strategy="default", chat_template=template,
            num_additional_image_tokens=1)
        config = LlavaConfig(
            vision_config=CLIPVisionConfig(hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                                           num_attention_heads=2, image_size=16, patch_size=8),
            text_config=LlamaConfig(vocab_size=len(vocab), hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                                    num_attention_heads=2, num_key_value_heads=2, max_position_embeddings=8192),
            image_token_index=vocab["<image>"], vision_feature_layer=-1, vision_feature_select_strategy="default")
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            model = LlavaForConditionalGeneration(config)
        return cls(model.to(device=device, dtype=dtype).eval(), processor, max_new_tokens)

    def describe(self, request: DescribeRequest) -> str:
        import torch

        parts = build_parts(request)
        content = [{"type": "text", "text": p} if isinstance(p, str) else {"type": "image"} for p in parts]
        images = [Image.fromarray(np.asarray(p, np.uint8)).convert("RGB") for p in parts if not isinstance(p, str)]
        text = self.processor.apply_chat_template([{"role": "user", "content": content}], add_generation_prompt=True)
        inputs = self.processor(text=text, images=images, return_tensors="pt").to(self.model.device)
        if "pixel_values" in inputs:
            inputs["pixel_values"] = inputs["pixel_values"].to(self.model.dtype)
        with torch.no_grad():
            out = self.model.generate(**inputs, max_new_tokens=self.max_new_tokens, do_sample=False)
        new = out[:, inputs["input_ids"].shape[1]:]
        return self.processor.batch_decode(new, skip_special_tokens=True)[0]
