"""Scoring: Detect-and-Compare and text fidelity of generated images (``mudi evaluate``, the benchmark,
iterative training). Import the submodules: ``config``, ``evaluator``, ``text``, ``models``, ``folder``,
``report``."""
