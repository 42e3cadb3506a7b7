"""PNG figures for a run: learning curves, confusion matrix, the learned kernels.

Pure plotting of arrays into files (matplotlib's Agg backend: no display needed). Every function
takes plain arrays, writes one PNG atomically and returns its path.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np

from pipeline.files import atomic_path

_SAVE = {"dpi": 110, "metadata": {"Software": None}}  # no version stamp: stable bytes


def smooth(losses: Sequence[float], decay: float = 0.99) -> np.ndarray:
    """The toolbox's running loss: rL(1) = L_1, rL(t+1) = decay * rL(t) + (1 - decay) * L_t."""
    out = np.empty(len(losses))
    acc = float(losses[0]) if len(losses) else 0.0
    for t, loss in enumerate(losses):  # a plot-time recurrence, not the training hot path
        acc = acc if t == 0 else decay * acc + (1 - decay) * float(loss)
        out[t] = acc
    return out


def learning_curves(
    path: Path,
    *,
    batch_loss: Sequence[float],
    batches_per_epoch: int,
    train_loss: Sequence[float],
    val_loss: Sequence[float],
    val_error: Sequence[float],
) -> Path:
    """Per-batch loss (raw and smoothed) over epochs; per-epoch losses and validation error."""
    fig, (ax_b, ax_e, ax_err) = plt.subplots(1, 3, figsize=(13, 3.6))
    steps = np.arange(1, len(batch_loss) + 1) / max(batches_per_epoch, 1)
    if len(batch_loss):
        ax_b.plot(steps, batch_loss, lw=0.4, alpha=0.35, label="batch loss")
        ax_b.plot(steps, smooth(batch_loss), lw=1.2, label="smoothed (0.99)")
    ax_b.set(xlabel="epoch", ylabel="loss (eq. 13, batch mean)", title="per batch")
    ax_b.legend(fontsize=8)
    epochs = np.arange(1, len(train_loss) + 1)
    ax_e.plot(epochs, train_loss, "o-", label="train")
    if len(val_loss):
        ax_e.plot(epochs, val_loss, "s-", label="validation")
    ax_e.set(xlabel="epoch", ylabel="loss", title="per epoch")
    ax_e.legend(fontsize=8)
    if len(val_error):
        ax_err.plot(epochs, 100 * np.asarray(val_error), "s-", color="C1")
    ax_err.set(xlabel="epoch", ylabel="error (%)", title="validation error")
    for ax in (ax_e, ax_err):
        ax.xaxis.get_major_locator().set_params(integer=True)
    return save(fig, path)


def confusion(path: Path, matrix: np.ndarray, *, title: str = "test confusion matrix") -> Path:
    """A 10x10 confusion matrix (rows: true label, columns: predicted), counts annotated."""
    matrix = np.asarray(matrix)
    fig, ax = plt.subplots(figsize=(5.2, 4.6))
    im = ax.imshow(matrix, cmap="Blues")
    for (i, j), count in np.ndenumerate(matrix):
        dark = count > matrix.max() / 2
        ax.text(
            j,
            i,
            str(count),
            ha="center",
            va="center",
            fontsize=7,
            color="white" if dark else "black",
        )
    ax.set(
        xlabel="predicted",
        ylabel="true",
        title=title,
        xticks=range(matrix.shape[1]),
        yticks=range(matrix.shape[0]),
    )
    fig.colorbar(im, ax=ax, fraction=0.046)
    return save(fig, path)


def kernels(path: Path, k: np.ndarray, *, title: str) -> Path:
    """Kernels k (maps_in, maps_out, 5, 5) as a maps_in x maps_out grid of images.

    Shown as stored: k as it enters the paper's true convolution (eqs. 5 and 8).
    """
    n_in, n_out = k.shape[:2]
    fig, axes = plt.subplots(
        n_in, n_out, figsize=(0.8 * n_out + 0.6, 0.8 * n_in + 0.6), squeeze=False
    )
    lim = float(np.abs(k).max()) or 1.0
    for (i, j), ax in np.ndenumerate(axes):
        ax.imshow(k[i, j], cmap="RdBu_r", vmin=-lim, vmax=lim)
        ax.set_xticks([])
        ax.set_yticks([])
        if i == 0:
            ax.set_title(str(j + 1), fontsize=7)
        if j == 0:
            ax.set_ylabel(str(i + 1), fontsize=7)
    fig.suptitle(f"{title} (rows: input map, columns: output map)", fontsize=9)
    return save(fig, path)


def save(fig: plt.Figure, path: Path) -> Path:
    """Write `fig` as a PNG atomically (stable bytes: no version stamp) and close it."""
    path = Path(path)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", **_SAVE)
    plt.close(fig)
    return path
