"""The toy world: a procedural 32×32 world of coloured shapes, an automatic checker, and a tiny diffusion
model pretrained on it (shipped in ``model/``), so mudi can show on CPU that it fixes identity mixing.

``world`` and ``checker`` are pure numpy/PIL; ``pretrain`` (torch, diffusers) trains the shipped model.
"""

from pathlib import Path

MODEL_DIR = Path(__file__).with_name("model")  # the shipped pretrained pipeline (see model/MODEL_CARD.md)
SUBJECTS_DIR = Path(__file__).with_name("subjects")  # the demo subjects: world.DEMO_SUBJECTS rendered
