"""Reproducible experiment pipeline around the CNN of Zhang (2016), "Derivation of
Backpropagation in CNN". Data flow: fetch -> prepare -> train -> evaluate -> tracking."""

from pipeline import runtime

# One BLAS thread unless the user chose otherwise, set here because it only takes effect before
# NumPy loads its BLAS, and every `python -m pipeline.*` imports this package first (see
# pipeline.runtime for why one thread: speed on shared cores, and byte-identical results).
runtime.default_single_thread_blas()

__version__ = "0.1.0"
