"""The methods of the paper's comparison (Fig. 6, Table 1): how each trains its LoRA and samples its images —
one record per method, read by ``mudi run`` (:mod:`mudi.pipeline`) and ``mudi benchmark`` alike — and the plain
classes of the "w/o descriptive class" ablation (Sec. 4.1)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class Method:
    """One row of the comparison: how its LoRA is trained and how its images are sampled."""

    label: str
    composition: str  # TrainConfig.composition: segmix | cutmix | none
    init: str  # generate init: auto (the backbone's: mean_shifted, FLUX none) | mean_shifted | none
    descriptive_class: bool = True
    use_negative_prompt: bool = True  # Appendix A.1: "sticker, collage." for MuDI, none for Cut-Mix/DB
    region_control: bool = False  # Mix-of-Show's regional prompts in the layout's boxes at sampling (DB+Region)
    train: dict[str, Any] = field(default_factory=dict)  # TrainConfig values of the method's own recipe


METHODS: dict[str, Method] = {
    "mudi": Method("MuDI (Ours)", "segmix", "auto"),  # the authors' MuDI per family: no init on FLUX
    "dreambooth": Method("DB", "none", "none", use_negative_prompt=False),
    "cutmix": Method("Cut-Mix", "cutmix", "none", use_negative_prompt=False),
    # Fig. 6: DreamBooth's LoRA sampled with Mix-of-Show's regionally controllable sampling (the paper's [14])
    "db-region": Method("DB+Region", "none", "none", use_negative_prompt=False, region_control=True),
    "mudi-no-segmix": Method("w/o Seg-Mix", "none", "mean_shifted"),
    "mudi-no-init": Method("w/o Initialization", "segmix", "none"),
    "mudi-no-desc": Method("w/o Desc. Class", "segmix", "auto", descriptive_class=False),
    # Appendix B.1: Custom Diffusion on SDXL as LoRA on the cross-attention K/V plus a modifier token per subject
    "custom-diffusion": Method("Custom Diffusion", "none", "none", use_negative_prompt=False,
                               train={"lora_target_modules": ["custom-diffusion"], "train_modifier_tokens": True}),
    # Fig. 6: Textual Inversion, a new token embedding per subject and no LoRA; diffusers' textual_inversion_sdxl
    # recipe: learning rate 5e-4 scaled by the batch (--scale_lr; mudi's batch 2), weight decay 1e-2
    "ti": Method("TI", "none", "none", use_negative_prompt=False,
                 train={"train_modifier_tokens": True, "train_lora": False, "learning_rate": 1e-3,
                        "adam_weight_decay": 1e-2}),
}


# Descriptive class -> the plain class the "w/o Desc. Class" ablation trains with (Sec. 4.1, Table 1).
GENERIC_CLASSES: dict[str, str] = {
    "corgi": "dog", "chow chow": "dog", "weimaraner": "dog", "russian blue": "cat",
    "harry potter toy": "toy", "white robot toy": "toy", "red monster plush": "toy", "blue drink can": "can",
    "brown teddy bear": "teddy bear", "beige teddy bear": "teddy bear",
}


def training_key(method: str) -> str:
    """Which training a method's images come from: its composition mode (methods that train the same way share one
    LoRA: ``mudi`` and ``mudi-no-init`` share ``segmix``), or the method itself when it has its own recipe
    (``ti``, ``custom-diffusion``)."""
    spec = METHODS[method]
    return method if spec.train else spec.composition
