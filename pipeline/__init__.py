"""Reproducible experiment pipeline around the CNN of Zhang (2016), "Derivation of
Backpropagation in CNN".

The layout follows the data: fetch -> prepare -> train -> evaluate -> tracking -> reports.
Modules at the top are entry points (DVC stages, commands, the Hydra callback) and the few
foundations they share; each entry point reads the configuration, the environment and files,
then calls into the folders below, which never read the environment or a whole config:
- data/      manifests, sources, IDX parsing, the prepared file
- model/     the network (cnn), SGD, inference, the run's plan, the toolbox replay,
             checkpoints (a run's saved state)
- tracking/  the MLflow store, runs, the sweep's parent run, the pyfunc model, whether a
             RUNNING run's process is alive
- reports/   figures, the sweep comparison, the reproduction report, the summary
- share/     a logged run re-checked: its commit checked out, retrained, compared
- bench/     the speed benchmark (`python -m pipeline.bench`)
"""

import os

from pipeline import runtime

# One BLAS thread unless the user chose otherwise, set here because it only takes effect before
# NumPy loads its BLAS, and every `python -m pipeline.*` imports this package first (see
# pipeline.runtime for why one thread: speed on shared cores, and byte-identical results).
runtime.default_single_thread_blas()
# Portable mode (unless PIPELINE_PORTABLE=0): NumPy's and OpenBLAS's SIMD paths pinned to AVX2 +
# FMA, so that results are the same bytes on any x86-64 CPU; also only before NumPy loads.
runtime.portable_simd()
os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")  # before MLflow is imported

__version__ = "0.1.0"
