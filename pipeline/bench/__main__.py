"""Benchmark: full MNIST epochs of the NumPy CNN, float32 and float64, against PyTorch if present.

    python -m pipeline.bench [--data data/prepared/mnist.npz] [--repeats 3] [--threads N] [--json]

Prints the CPU (its model, the widest SIMD level it offers, and the paths that ran: portable
mode pins them to AVX2, see `pipeline.runtime`), the median seconds per epoch, images per second
and the test error reached, the threads used, the peak memory of the process while it trained
(before PyTorch was imported), and the time per operation (conv1 / pool / conv2 / fc, forward
and backward; one thread). Where torch is importable, `pipeline.bench.torch_twin` trains the
same network from the same weights in the same order, interleaved with the NumPy runs, at each
thread count from 1 to the cores available (powers of two and that number); its best median is
its time, and the ratio NumPy / PyTorch is printed.

Training runs as `pipeline.train` runs it: images kept as stored (uint8) and converted per
batch, the batch cut into parts on `--threads` threads (default: the cores available), BLAS on
one thread per part (set by `import pipeline` before NumPy loads, unless the environment says
otherwise) and glibc's malloc keeping large blocks for reuse; see `pipeline.runtime`.
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

Data = tuple[Split, Split]  # (training images, test images), from `load`


def load(path: str) -> Data:
    """All 60,000 training images (file order) and the test images, as stored (uint8)."""
    prepared = read_prepared(path, fix="make one with `make repro` (or `dvc repro prepare`)")
    return prepared.split("train"), prepared.split("test")


def _start(dtype: np.dtype, seed: int) -> tuple[cnn.Params, np.random.Generator]:
    """A run's initial parameters (in `dtype`) and shuffle generator, from `seed`."""
    init_rng, shuffle_rng = make_generators(seed)
    return cnn.init_params(init_rng, dtype), shuffle_rng


def run_numpy(
    data: Data, dtype: np.dtype, seed: int, epochs: int, batch_size: int, lr: float, threads: int
) -> tuple[float, float]:
    """Train from `seed`; returns (seconds per epoch, test error)."""
    train, test = data
    params, shuffle_rng = _start(dtype, seed)
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
        threads=threads,
    )
    seconds = (time.perf_counter() - start) / epochs
    return seconds, error_rate(predict(res.params, test.x, threads=threads), test.labels)


def run_torch(
    data: Data,
    x: np.ndarray,
    dtype: np.dtype,
    seed: int,
    epochs: int,
    batch_size: int,
    lr: float,
    threads: int,
) -> tuple[float, float]:
    """The same run in PyTorch (same init and order) on `threads` threads, from the training
    images converted once (x: (N, 28, 28) in `dtype`); returns (seconds per epoch, test error)."""
    from pipeline.bench import torch_twin

    train, test = data
    params, shuffle_rng = _start(dtype, seed)
    y = train.y.astype(dtype)
    seconds = 0.0
    for _ in range(epochs):
        perm = shuffle_rng.permutation(len(train))
        params, s = torch_twin.train_epoch(params, x, y, perm, batch_size, lr, threads=threads)
        seconds += s
    return seconds / epochs, error_rate(predict(params, test.x), test.labels)


def profile(
    data: Data, dtype: np.dtype, batches: int, batch_size: int, lr: float
) -> tuple[dict[str, float], float]:
    """Per-stage milliseconds per batch over `batches` batches (one thread: the parts one after
    another), and the tracemalloc peak (MiB) of those training steps (the dataset excluded)."""
    train, _ = data
    params = cnn.init_params(np.random.default_rng(0), dtype)
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
        clock[0] = time.perf_counter()
        xb = train.x.batch(idx, dtype)  # timed as part of "input"
        params = sgd.step(params, xb, train.y[idx], lr, lap).params
    peak = tracemalloc.get_traced_memory()[1] / 2**20
    tracemalloc.stop()
    ms = {
        g: 1e3 * sum(totals.get(s, 0.0) for s in stages) / batches for g, stages in GROUPS.items()
    }
    return ms, peak


def torch_thread_counts(cores: int) -> list[int]:
    """1, 2, 4, ... up to `cores`, and `cores` itself."""
    counts = [1 << i for i in range(cores.bit_length()) if 1 << i <= cores]
    return sorted({*counts, cores})


def max_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB


def main(argv: list[str] | None = None) -> dict[str, Any]:
    cores = runtime.available_cores()
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", default="data/prepared/mnist.npz")
    ap.add_argument("--repeats", type=int, default=3, help="timed epochs per dtype (median)")
    ap.add_argument("--epochs", type=int, default=1, help="epochs per timed run")
    ap.add_argument("--batch-size", type=int, default=50)
    ap.add_argument("--lr", type=float, default=1.0)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--dtypes", nargs="+", default=["float32", "float64"])
    ap.add_argument("--threads", type=int, default=cores, help=f"NumPy side (default {cores})")
    ap.add_argument("--profile-batches", type=int, default=200)
    ap.add_argument("--no-torch", action="store_true", help="skip PyTorch even if importable")
    ap.add_argument("--json", action="store_true", help="print one JSON object only")
    ap.add_argument("--default-malloc", action="store_true", help="skip runtime.tune_malloc")
    args = ap.parse_args(argv)
    malloc_tuned = False if args.default_malloc else runtime.tune_malloc()
    say = (lambda *a: print(*a, file=sys.stderr)) if args.json else print
    use_torch = not args.no_torch and importlib.util.find_spec("torch") is not None
    dtypes = [np.dtype(name) for name in args.dtypes]

    data = load(args.data)
    model, level = runtime.cpu()
    env = runtime.environment()
    out: dict[str, Any] = {
        "cpu": model,
        "cpu_simd": level,  # the widest level the CPU offers
        "portable": env.portable,
        "simd": runtime.simd_paths(),  # the paths that ran
        "threads": args.threads,
        "blas_threads": env.blas_threads,
        "malloc_tuned": malloc_tuned,
        "batch_size": args.batch_size,
        "lr": args.lr,
        "epochs": args.epochs,
        "repeats": args.repeats,
        "seed": args.seed,
    }
    n_train = len(data[0])
    # Profile first, then time NumPy alone once per dtype, all before torch is imported, so
    # that the process's max RSS is NumPy's training at its thread count.
    for dtype in dtypes:
        out[f"breakdown_ms_per_batch_{dtype}"], out[f"peak_traced_mib_{dtype}"] = profile(
            data, dtype, args.profile_batches, args.batch_size, args.lr
        )
    times: dict[str, list[float]] = {}
    errors: dict[str, float] = {}

    def record(key: str, seconds: float, error: float, what: str) -> None:
        times.setdefault(key, []).append(seconds)
        errors[key] = error
        say(f"{what}: {seconds:.2f} s/epoch, test error {error:.4f}")

    for r in range(args.repeats):  # interleaved: numpy (each dtype), torch (each dtype, count)
        for dtype in dtypes:
            s, err = run_numpy(
                data, dtype, args.seed, args.epochs, args.batch_size, args.lr, args.threads
            )
            record(str(dtype), s, err, f"repeat {r + 1}/{args.repeats} numpy_{dtype}")
        if r == 0:
            out["max_rss_mib_numpy"] = max_rss_mib()  # every dtype trained, torch not loaded
        for dtype in dtypes if use_torch else []:
            x = data[0].x.array(dtype)  # torch takes the images converted once
            for t in torch_thread_counts(cores):
                s, err = run_torch(
                    data, x, dtype, args.seed, args.epochs, args.batch_size, args.lr, t
                )
                what = f"repeat {r + 1}/{args.repeats} torch_{dtype} ({t} threads)"
                record(f"torch{t}_{dtype}", s, err, what)
            del x
    out.setdefault("max_rss_mib_numpy", max_rss_mib())
    for dtype in dtypes:
        med = statistics.median(times[str(dtype)])
        out[f"epoch_s_{dtype}"] = med
        out[f"images_per_s_{dtype}"] = n_train / med
        out[f"test_error_{dtype}"] = errors[str(dtype)]
        out[f"all_epoch_s_{dtype}"] = times[str(dtype)]
        if not use_torch:
            continue
        by_threads = {
            t: statistics.median(times[f"torch{t}_{dtype}"]) for t in torch_thread_counts(cores)
        }
        best = min(by_threads, key=by_threads.__getitem__)
        out[f"torch_epoch_s_{dtype}"] = by_threads[best]
        out[f"torch_threads_{dtype}"] = best
        out[f"torch_epoch_s_by_threads_{dtype}"] = {str(t): v for t, v in by_threads.items()}
        out[f"all_torch_epoch_s_{dtype}"] = times[f"torch{best}_{dtype}"]
        out[f"images_per_s_torch_{dtype}"] = n_train / by_threads[best]
        out[f"test_error_torch_{dtype}"] = errors[f"torch{best}_{dtype}"]
        out[f"ratio_numpy_over_torch_{dtype}"] = med / by_threads[best]

    if args.json:
        print(json.dumps(out))
        return out
    print(
        f"\nCPU {model} ({level}); paths that ran: {out['simd']}, portable mode "
        f"{'on' if env.portable else 'off'}\n"
        f"MNIST, {n_train} images, batch {args.batch_size}, lr {args.lr}, "
        f"{args.epochs} epoch(s), median of {args.repeats}; NumPy on {args.threads} thread(s), "
        f"BLAS threads {out['blas_threads']} per part, malloc tuned {malloc_tuned}"
    )
    for dtype in dtypes:
        line = (
            f"{dtype}: {out[f'epoch_s_{dtype}']:.2f} s/epoch, {out[f'images_per_s_{dtype}']:.0f} "
            f"img/s, test error {out[f'test_error_{dtype}']:.4f}, "
            f"peak traced {out[f'peak_traced_mib_{dtype}']:.1f} MiB"
        )
        if use_torch:
            counts = ", ".join(
                f"{t} threads {v:.2f}" for t, v in out[f"torch_epoch_s_by_threads_{dtype}"].items()
            )
            line += (
                f" | torch {out[f'torch_epoch_s_{dtype}']:.2f} s/epoch at its best "
                f"({counts}; error {out[f'test_error_torch_{dtype}']:.4f}), ratio "
                f"{out[f'ratio_numpy_over_torch_{dtype}']:.2f}"
            )
        print(line)
        per_batch = out[f"breakdown_ms_per_batch_{dtype}"]
        batches = -(-n_train // args.batch_size)
        print(
            "  per operation, one thread, ms/batch (s/epoch): "
            + ", ".join(f"{k} {v:.3f} ({v * batches / 1e3:.2f})" for k, v in per_batch.items())
        )
    print(f"peak RSS of the process while NumPy trained: {out['max_rss_mib_numpy']:.0f} MiB")
    return out


if __name__ == "__main__":
    main()
