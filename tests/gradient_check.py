"""Central finite differences in float64, the oracle for every backward op (after CS231n's
`gradient_check.py`). Imports nothing of the code it checks."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np


def eval_numerical_gradient(f: Callable[[np.ndarray], float], x: np.ndarray, h: float = 1e-5):
    """Numerical gradient of a scalar function: df/dx[i] ≈ (f(x + h e_i) - f(x - h e_i)) / 2h.

    Inputs: f, called with `x` itself (perturbed in place, one entry at a time, and restored);
    x float64 array, any shape; h the step.
    Returns: grad with the shape of x.
    """
    grad = np.zeros_like(x)
    for i in np.ndindex(x.shape):
        old = x[i]
        x[i] = old + h
        fp = f(x)
        x[i] = old - h
        fm = f(x)
        x[i] = old
        grad[i] = (fp - fm) / (2 * h)
    return grad


def eval_numerical_gradient_array(
    f: Callable[[np.ndarray], np.ndarray], x: np.ndarray, dout: np.ndarray, h: float = 1e-5
) -> np.ndarray:
    """Numerical gradient of sum(f(x) * dout) with respect to x, for an array-valued f.

    With a random upstream `dout` this checks every entry of the backward op's vector-Jacobian
    product at once. The difference f(x+h) - f(x-h) is taken elementwise before the sum, which
    keeps the rounding error of the scalar small.

    Inputs: f, called with `x` itself (perturbed in place and restored), returning an array of
    dout's shape; x float64 array; dout the upstream gradient; h the step.
    Returns: grad with the shape of x.
    """
    grad = np.zeros_like(x)
    for i in np.ndindex(x.shape):
        old = x[i]
        x[i] = old + h
        pos = f(x).copy()  # f may return a view of a buffer that the next call overwrites
        x[i] = old - h
        neg = f(x).copy()
        x[i] = old
        grad[i] = np.sum((pos - neg) * dout) / (2 * h)
    return grad


def rel_error(a: np.ndarray, b: np.ndarray) -> float:
    """Largest elementwise relative error max |a - b| / max(1e-8, |a| + |b|)."""
    return float(np.max(np.abs(a - b) / np.maximum(1e-8, np.abs(a) + np.abs(b))))
