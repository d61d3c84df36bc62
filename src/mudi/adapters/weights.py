"""What every adapter shares about weights: one error for a checkpoint that cannot be loaded, model placement."""

from __future__ import annotations

import re
import warnings
from pathlib import Path
from typing import Any

from mudi.devices import parse_dtype
from mudi.errors import MudiError

_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")


def is_hub_id(value: str) -> bool:
    """Whether ``value`` reads as a Hugging Face repository id ``NAMESPACE/NAME`` (letters, digits, ``-_.``; neither
    part ``.`` or ``..``), the one rule for the model keys a page may send, a model card's ``base_model`` and
    ``mudi push --repo_id``."""
    return bool(_HUB_ID.match(value)) and not any(p in (".", "..") for p in value.split("/"))


def place_model(model: Any, device: Any, dtype: Any) -> tuple[Any, Any, Any]:
    """``(torch.device, torch dtype, model)``: ``model`` moved to ``device`` in ``dtype`` (:func:`mudi.devices.parse_dtype`:
    ``None`` is float32) and put in eval mode, as every detector, segmenter and embedder holds it."""
    import torch

    device, dtype = torch.device(device), parse_dtype(dtype)
    return device, dtype, model.to(device=device, dtype=dtype).eval()


class DenoiserPlacement:
    """``device`` / ``dtype`` of a backbone, read from its denoiser's first parameter: diffusers' own
    ``module.device`` walks every submodule (~3 ms a call, and the init asks per composition)."""

    denoiser: Any

    @property
    def device(self) -> Any:
        return next(self.denoiser.parameters()).device

    @property
    def dtype(self) -> Any:
        return next(self.denoiser.parameters()).dtype

    def repeated_blocks(self) -> list[Any]:
        """The denoiser's repeated transformer blocks: the classes diffusers lists in ``_repeated_blocks``
        (UNet: ``BasicTransformerBlock``; FLUX: its double and single blocks)."""
        names = set(getattr(type(self.denoiser), "_repeated_blocks", ()) or ())
        return [m for m in self.denoiser.modules() if type(m).__name__ in names]


def missing_weights_error(what: str, pretrained_model_name_or_path: str, cause: Exception,
                          flag: str | None = None) -> MudiError:
    """The one-line error for weights that are neither in the local cache nor downloadable (or a broken folder).

    Names the checkpoint, how to pre-download it, and (``flag``) the option that points at a local folder.
    """
    first = (str(cause).strip().splitlines() or [type(cause).__name__])[0][:160]
    where = f" with {flag}" if flag else ""
    if Path(str(pretrained_model_name_or_path)).is_dir():
        return MudiError(f"cannot load the {what} checkpoint in {pretrained_model_name_or_path} ({first}); "
                         "check that the folder is a complete checkpoint")
    return MudiError(f"cannot load the {what} checkpoint {str(pretrained_model_name_or_path)!r} ({first}); download "
                     f"it first with `huggingface-cli download {pretrained_model_name_or_path}` (or `hf download`) on "
                     "a machine with network access and copy the Hugging Face cache (unset HF_HUB_OFFLINE when "
                     f"online), or pass a local folder holding it{where}")


QUANTIZATIONS = ("int8", "nf4")


def quantization_config(kind: str, component: str, compute_dtype: Any) -> Any:
    """diffusers' ``PipelineQuantizationConfig`` loading ``component`` (the denoiser) in 8-bit or NF4 4-bit with
    bitsandbytes (CUDA only): the frozen base weights of a LoRA run take 1/2 or ~1/4 of their bf16 memory."""
    import torch

    if kind not in QUANTIZATIONS:
        raise MudiError(f"quantization {kind!r} is not one of {', '.join(QUANTIZATIONS)}")
    if not torch.cuda.is_available():
        raise MudiError(f"{kind} base weights need a CUDA GPU (bitsandbytes); drop --quantize_base")
    try:
        import bitsandbytes  # noqa: F401
    except ImportError:
        raise MudiError(f"{kind} base weights need bitsandbytes: pip install 'mudi[bnb]'") from None
    from diffusers.quantizers import PipelineQuantizationConfig

    if kind == "nf4":
        return PipelineQuantizationConfig(quant_backend="bitsandbytes_4bit", components_to_quantize=[component],
                                          quant_kwargs={"load_in_4bit": True, "bnb_4bit_quant_type": "nf4",
                                                        "bnb_4bit_compute_dtype": parse_dtype(compute_dtype)})
    return PipelineQuantizationConfig(quant_backend="bitsandbytes_8bit", components_to_quantize=[component],
                                      quant_kwargs={"load_in_8bit": True})


def load_pipeline(pipeline_class: Any, pretrained_model_name_or_path: str, dtype: Any, **kwargs: Any) -> Any:
    """``pipeline_class.from_pretrained(..., torch_dtype=dtype)``: the keyword every supported diffusers release
    takes (newer ones prefer ``dtype=`` and warn about ``torch_dtype``; that warning is silenced here)."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*torch_dtype.*deprecated", category=FutureWarning)
        return pipeline_class.from_pretrained(pretrained_model_name_or_path, torch_dtype=dtype, **kwargs)


def load_vae(pretrained_model_name_or_path: str, device: Any = "cpu", dtype: Any = None) -> Any:
    """An ``AutoencoderKL`` from a folder or hub id (a checkpoint's ``vae/`` subfolder is found too)."""
    from diffusers import AutoencoderKL

    path = Path(str(pretrained_model_name_or_path))
    kwargs = {"subfolder": "vae"} if (path / "vae" / "config.json").is_file() else {}
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*torch_dtype.*deprecated", category=FutureWarning)
        try:
            vae = AutoencoderKL.from_pretrained(str(pretrained_model_name_or_path), torch_dtype=parse_dtype(dtype),
                                                **kwargs)
        except (OSError, ValueError) as e:
            raise missing_weights_error("VAE", str(pretrained_model_name_or_path), e, "--vae") from None
    return vae.to(device).eval().requires_grad_(False)
