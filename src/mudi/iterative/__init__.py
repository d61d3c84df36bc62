"""Iterative training (paper Sec. 5.5, Appendix C.3): generate with the current LoRA and the mean-shifted init,
score with D&C, keep the top K, fine-tune on them with the KL regularizer, repeat. Entry point:
:func:`mudi.iterative.loop.run_iterations`; the shipped prompt templates are ``prompts.txt``."""
