"""Adapters: everything that loads a model lives here, one module per upstream family.

Registries are plain dicts of dotted paths so that ``import mudi`` stays light.
"""
