"""Modular customization with Seg-Mix (paper Sec. 5.4, Appendix C.2): single-subject LoRAs → reference photos →
merge → Seg-Mix fine-tuning with KL → one LoRA. Entry point: :func:`mudi.modular.pipeline.run_modular`."""
