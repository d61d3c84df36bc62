"""Merging LoRAs (``mudi merge``): any LoRA format read into one canonical form, then a weighted sum, a
concatenation of ranks or Mix-of-Show gradient fusion, written as one LoRA. Import the submodules: ``config``,
``formats``, ``methods``, ``fusion``, ``folder``."""
