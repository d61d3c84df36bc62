"""Trainer helpers: training samples, checkpoints, LoRA file formats."""
