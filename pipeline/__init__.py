"""Reproducible experiment pipeline around the CNN of Zhang (2016), "Derivation of
Backpropagation in CNN". Data flow: fetch -> prepare -> train -> evaluate -> tracking."""

__version__ = "0.1.0"
