"""Benchmark: full MNIST epochs of the NumPy CNN, float32 and float64, against PyTorch if present.

    python -m pipeline.bench [--data data/prepared/mnist.npz] [--repeats 3] [--json]

Prints the median seconds per epoch, images per second, the test error reached, the peak memory
of training, and the time per operation (conv1 / pool / conv2 / fc, forward and backward). Where
torch is importable, `pipeline.bench.torch_twin` trains the same network from the same weights
in the same order, interleaved with the NumPy runs, and the ratio NumPy / torch is printed.

BLAS runs on one thread (set by `import pipeline` before NumPy loads, unless the environment says
otherwise) and glibc's malloc keeps large blocks for reuse; see `pipeline.runtime`.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import resource
import statistics
import sys
import time
import tracemalloc
from typing import Any

import numpy as np

from pipeline import runtime
from pipeline.data.prepared import Split, read_prepared
from pipeline.model import cnn, sgd
from pipeline.model.inference import error_rate, predict
from pipeline.model.plan import make_generators, shuffled

# Stages reported by `cnn.forward` / `cnn.backward` through their `lap` hook, grouped per layer.
GROUPS = {
    "conv1_fwd": ("input", "conv1_fwd"),
    "pool1_fwd": ("pool1_fwd",),
    "conv2_fwd": ("conv2_fwd",),
    "pool2_fwd": ("pool2_fwd",),
    "fc_fwd": ("fc_fwd",),
    "fc_bwd": ("fc_bwd",),
    "pool2_bwd": ("pool2_bwd",),
    "conv2_bwd": ("conv2_bwd",),
    "pool1_bwd": ("pool1_bwd",),
    "conv1_bwd": ("conv1_bwd",),
    "sgd": ("sgd",),
}


def load(path: str, dtype: np.dtype) -> tuple[Split, Split]:
    """All 60,000 training images (file order) and the test images, x/255 in `dtype`."""
    prepared = read_prepared(path, fix="make one with `make repro` (or `dvc repro prepare`)")
    return prepared.split("train", dtype), prepared.split("test", dtype)


Data = tuple[Split, Split]  # (training images, test images), from `load`


def _start(data: Data, seed: int) -> tuple[cnn.Params, np.random.Generator]:
    """A run's initial parameters (in the data's dtype) and shuffle generator, from `seed`."""
    init_rng, shuffle_rng = make_generators(seed)
    return cnn.init_params(init_rng, data[0].x.dtype), shuffle_rng


def run_numpy(
    data: Data, seed: int, epochs: int, batch_size: int, lr: float
) -> tuple[float, float]:
    """Train from `seed`; returns (seconds per epoch, test error)."""
    train, test = data
    params, shuffle_rng = _start(data, seed)
    start = time.perf_counter()
    res = sgd.train(
        params,
        train.x,
        train.y,
        epochs=epochs,
        batch_size=batch_size,
        lr=lr,
        order=shuffled(shuffle_rng, len(train)),
        progress=False,
    )
    seconds = (time.perf_counter() - start) / epochs
    return seconds, error_rate(predict(res.params, test.x), test.labels)


def run_torch(
    data: Data, seed: int, epochs: int, batch_size: int, lr: float
) -> tuple[float, float]:
    """The same run in PyTorch (same init and order); returns (seconds per epoch, test error)."""
    from pipeline.bench import torch_twin

    train, test = data
    params, shuffle_rng = _start(data, seed)
    seconds = 0.0
    for _ in range(epochs):
        perm = shuffle_rng.permutation(len(train))
        params, s = torch_twin.train_epoch(params, train.x, train.y, perm, batch_size, lr)
        seconds += s
    return seconds / epochs, error_rate(predict(params, test.x), test.labels)


def profile(data: Data, batches: int, batch_size: int, lr: float) -> tuple[dict[str, float], float]:
    """Per-stage milliseconds per batch over `batches` batches, and the tracemalloc peak (MiB)
    of those training steps (the dataset itself excluded)."""
    train, _ = data
    params = cnn.init_params(np.random.default_rng(0), train.x.dtype)
    perm = np.random.default_rng(1).permutation(len(train))
    totals: dict[str, float] = {}
    clock = [0.0]

    def lap(name: str) -> None:
        now = time.perf_counter()
        totals[name] = totals.get(name, 0.0) + now - clock[0]
        clock[0] = now

    tracemalloc.start()
    for i in range(batches):
        idx = perm[i * batch_size : (i + 1) * batch_size]
        xb, yb = train.x[idx], train.y[idx]
        clock[0] = time.perf_counter()
        params = sgd.step(params, xb, yb, lr, lap).params
    peak = tracemalloc.get_traced_memory()[1] / 2**20
    tracemalloc.stop()
    ms = {
        g: 1e3 * sum(totals.get(s, 0.0) for s in stages) / batches for g, stages in GROUPS.items()
    }
    return ms, peak


def main(argv: list[str] | None = None) -> dict[str, Any]:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", default="data/prepared/mnist.npz")
    ap.add_argument("--repeats", type=int, default=3, help="timed epochs per dtype (median)")
    ap.add_argument("--epochs", type=int, default=1, help="epochs per timed run")
    ap.add_argument("--batch-size", type=int, default=50)
    ap.add_argument("--lr", type=float, default=1.0)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--dtypes", nargs="+", default=["float32", "float64"])
    ap.add_argument("--profile-batches", type=int, default=200)
    ap.add_argument("--no-torch", action="store_true", help="skip PyTorch even if importable")
    ap.add_argument("--json", action="store_true", help="print one JSON object only")
    ap.add_argument("--default-malloc", action="store_true", help="skip runtime.tune_malloc")
    args = ap.parse_args(argv)
    malloc_tuned = False if args.default_malloc else runtime.tune_malloc()
    say = (lambda *a: print(*a, file=sys.stderr)) if args.json else print
    use_torch = not args.no_torch and importlib.util.find_spec("torch") is not None

    datasets = {name: load(args.data, np.dtype(name)) for name in args.dtypes}
    out: dict[str, Any] = {
        "blas_threads": runtime.environment().blas_threads,
        "malloc_tuned": malloc_tuned,
        "batch_size": args.batch_size,
        "lr": args.lr,
        "epochs": args.epochs,
        "repeats": args.repeats,
        "seed": args.seed,
    }
    n_train = len(datasets[args.dtypes[0]][0])
    # Profile first, before torch is imported, so that the process's max RSS is NumPy's.
    for name, data in datasets.items():
        out[f"breakdown_ms_per_batch_{name}"], out[f"peak_traced_mib_{name}"] = profile(
            data, args.profile_batches, args.batch_size, args.lr
        )
    out["max_rss_mib_numpy"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024

    times: dict[str, list[float]] = {}
    errors: dict[str, float] = {}
    for r in range(args.repeats):  # interleaved: numpy f32, torch f32, numpy f64, torch f64
        for name, data in datasets.items():
            runs = [("", run_numpy)] + ([("torch_", run_torch)] if use_torch else [])
            for prefix, fn in runs:
                s, err = fn(data, args.seed, args.epochs, args.batch_size, args.lr)
                times.setdefault(prefix + name, []).append(s)
                errors[prefix + name] = err
                who = f"{prefix or 'numpy_'}{name}"
                say(f"repeat {r + 1}/{args.repeats} {who}: {s:.2f} s/epoch, test error {err:.4f}")
    for key, ts in times.items():
        med = statistics.median(ts)
        out[f"epoch_s_{key}" if not key.startswith("torch_") else f"torch_epoch_s_{key[6:]}"] = med
        out[f"images_per_s_{key}"] = n_train / med
        out[f"test_error_{key}"] = errors[key]
        out[f"all_epoch_s_{key}"] = ts
    if use_torch:
        for name in args.dtypes:
            out[f"ratio_numpy_over_torch_{name}"] = (
                out[f"epoch_s_{name}"] / out[f"torch_epoch_s_{name}"]
            )

    if args.json:
        print(json.dumps(out))
        return out
    print(
        f"\nMNIST, {n_train} images, batch {args.batch_size}, lr {args.lr}, "
        f"{args.epochs} epoch(s), median of {args.repeats}, "
        f"BLAS threads {out['blas_threads']}, malloc tuned {malloc_tuned}"
    )
    for name in args.dtypes:
        line = (
            f"{name}: {out[f'epoch_s_{name}']:.2f} s/epoch, {out[f'images_per_s_{name}']:.0f} "
            f"img/s, test error {out[f'test_error_{name}']:.4f}, "
            f"peak traced {out[f'peak_traced_mib_{name}']:.1f} MiB"
        )
        if use_torch:
            line += (
                f" | torch {out[f'torch_epoch_s_{name}']:.2f} s/epoch (error "
                f"{out[f'test_error_torch_{name}']:.4f}), ratio "
                f"{out[f'ratio_numpy_over_torch_{name}']:.2f}"
            )
        print(line)
        per_batch = out[f"breakdown_ms_per_batch_{name}"]
        batches = -(-n_train // args.batch_size)
        print(
            "  per operation, ms/batch (s/epoch): "
            + ", ".join(f"{k} {v:.3f} ({v * batches / 1e3:.2f})" for k, v in per_batch.items())
        )
    print(f"max RSS of the NumPy part: {out['max_rss_mib_numpy']:.0f} MiB")
    return out


if __name__ == "__main__":
    main()
