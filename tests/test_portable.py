"""Portable mode (pipeline.runtime): the pins it sets, that NumPy and OpenBLAS really run the
pinned AVX2 paths, and that training gives the same bytes as AVX2 forced by other switches.
The pins only act before NumPy loads, so the checks run in child processes."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from pipeline import runtime

AVX2 = runtime._has_x86_64_v3()
needs_avx2 = pytest.mark.skipif(not AVX2, reason="portable mode needs an x86-64 CPU with AVX2+FMA")

# Seed 0's training on 200 synthetic images, 2 epochs, in both dtypes; prints what ran and the
# sha256 of the weights.
TRAIN = """
import hashlib, json
import pipeline
import numpy as np
from numpy.lib.introspect import opt_func_info
from pipeline import runtime
from pipeline.model import cnn, sgd
from pipeline.model.plan import make_generators, shuffled

rng = np.random.default_rng(1)
labels = np.arange(200) % 10
x = rng.random((200, 28, 28)) * (rng.random((10, 28, 28)) > 0.8)[labels]
out = {"simd": runtime.simd_paths(),
       "exp": opt_func_info(func_name="^exp$", signature="float64")["exp"]["dd"]["current"]}
for dtype in (np.float32, np.float64):
    init, order = make_generators(0)
    res = sgd.train(cnn.init_params(init, dtype), x.astype(dtype), np.eye(10, dtype=dtype)[labels],
                    epochs=2, batch_size=10, lr=1.0, order=shuffled(order, 200), progress=False)
    data = b"".join(res.params[k].tobytes() for k in sorted(res.params))
    out[np.dtype(dtype).name] = hashlib.sha256(data).hexdigest()
print(json.dumps(out))
"""


def _child(env: dict[str, str]) -> dict:
    done = subprocess.run(
        [sys.executable, "-c", TRAIN], env=env, capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def _base() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if k not in runtime.PORTABLE_ENV}


def test_with_portable_drops_the_pins_when_off():
    pinned = runtime.with_portable({"PATH": "/bin"} | runtime.PORTABLE_ENV, on=True)
    assert pinned["PIPELINE_PORTABLE"] == "1" and pinned["OPENBLAS_CORETYPE"] == "Haswell"
    native = runtime.with_portable(pinned, on=False)
    assert native == {"PATH": "/bin", "PIPELINE_PORTABLE": "0"}
    mine = runtime.with_portable({"OPENBLAS_CORETYPE": "Zen"}, on=False)
    assert mine["OPENBLAS_CORETYPE"] == "Zen"  # a user's own choice stays


def test_portable_simd_sets_the_pins_unless_turned_off():
    env = {"PIPELINE_PORTABLE": "0"}
    assert runtime.portable_simd(env) is False
    assert env == {"PIPELINE_PORTABLE": "0"}
    env = {}
    assert runtime.portable_simd(env) is AVX2
    assert env == (
        {**runtime.PORTABLE_ENV, "PIPELINE_PORTABLE": "1"} if AVX2 else {"PIPELINE_PORTABLE": "0"}
    )
    assert runtime.environment(env).portable is AVX2


@needs_avx2
def test_portable_mode_runs_the_avx2_paths_and_gives_their_bytes():
    portable = _child(runtime.with_portable(_base(), on=True))
    assert portable["simd"] == "numpy X86_V3, openblas Haswell"
    assert portable["exp"] == "X86_V3"  # NumPy's float64 exp: the AVX2 loop, not AVX-512's
    # AVX2 by other switches: NumPy's allow-list instead of the deny-list, and the core type an
    # AVX2 AMD EPYC reports (OpenBLAS maps Zen to its Haswell kernels).
    other = runtime.with_portable(_base(), on=False)
    other |= {"NPY_ENABLE_CPU_FEATURES": "X86_V3", "OPENBLAS_CORETYPE": "Zen"}
    assert _child(other) == portable
