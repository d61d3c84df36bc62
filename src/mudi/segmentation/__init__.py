"""Segmentation: detect + segment subjects in reference photos (``mudi segment``) and make prior sets
(``mudi prior``). Import the submodules: ``config``, ``detect``, ``folder``, ``prior``."""
