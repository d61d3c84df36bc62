"""Pure MuDI logic: Seg-Mix geometry, composition, prompts, initial latents, the D&C score.

Imports only numpy, torch and PIL — never diffusers, transformers, peft or accelerate
(tests/core/test_layering.py checks this).
"""
