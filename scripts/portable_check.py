"""Portable mode: does it give the bytes an AVX2-only machine gives, and what does it cost?

    python scripts/portable_check.py paths                  which code paths each mode runs
    python scripts/portable_check.py hashes [--images 2000] weights' sha256 per mode and dtype
    python scripts/portable_check.py cost [--repeats 5]     full-MNIST epoch seconds, on vs off

Every measurement runs in a child process, since the SIMD pins only take effect before NumPy
loads. The modes:
- native:    PIPELINE_PORTABLE=0, NumPy and OpenBLAS pick the widest paths this CPU runs;
- portable:  the project's portable mode (pipeline.runtime.PORTABLE_ENV);
- avx2-other: portable off, AVX2 forced by other switches: NPY_ENABLE_CPU_FEATURES=X86_V3 (an
  allow-list instead of the deny-list) and OPENBLAS_CORETYPE=Zen (what an AVX2 AMD EPYC is);
- qemu-*:    native or portable under `qemu-x86_64 -cpu MODEL` (Debian's qemu-user), an emulated
  AVX2-only CPU (EPYC-Rome, Haswell): NumPy's and OpenBLAS's own CPU detection see no
  AVX-512 and pick their paths as on such a machine. Skipped when qemu-x86_64 is absent.
The training: seed 0's initial weights and order, batch 50, learning rate 1, one epoch over the
first N images of the prepared file's fit split, as `pipeline.model.sgd.train` runs it.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

DATA = "data/prepared/mnist.npz"


def worker(data: str, images: int, dtypes: list[str]) -> dict:
    """Train one epoch per dtype in this process; the paths that ran, hashes and seconds."""
    import pipeline  # noqa: F401  (portable mode and BLAS threads, before NumPy loads)
    from pipeline import runtime
    from pipeline.data.prepared import read_prepared
    from pipeline.files import sha256_file
    from pipeline.model import cnn, sgd
    from pipeline.model.plan import make_generators, shuffled
    from pipeline.model.weights import save_weights

    runtime.tune_malloc()  # as the training entry points do
    prepared = read_prepared(data)
    out: dict = {"simd": runtime.simd_paths()}
    for name in dtypes:
        fit = prepared.split("fit").head(images or None)
        init_rng, order_rng = make_generators(0)
        params0 = cnn.init_params(init_rng, name)
        start, cpu = time.perf_counter(), time.process_time()
        trained = sgd.train(
            params0,
            fit.x,
            fit.y,
            epochs=1,
            batch_size=50,
            lr=1.0,
            order=shuffled(order_rng, len(fit)),
            progress=False,
        )
        seconds, cpu = time.perf_counter() - start, time.process_time() - cpu
        with tempfile.TemporaryDirectory() as tmp:
            save_weights(Path(tmp) / "w.npz", trained.params)
            digest = sha256_file(Path(tmp) / "w.npz")
        out[name] = {"sha256": digest, "seconds": seconds, "cpu": cpu, "images": len(fit)}
    return out


def modes(qemu: bool) -> dict[str, tuple[list[str], dict[str, str]]]:
    """name -> (command prefix, environment changes) of each mode."""
    from pipeline import runtime

    base = {k: v for k, v in os.environ.items() if k not in runtime.PORTABLE_ENV}
    native = runtime.with_portable(base, on=False)
    found = {
        "native": ([], native),
        "portable": ([], runtime.with_portable(base, on=True)),
        "avx2-other": (
            [],
            native | {"NPY_ENABLE_CPU_FEATURES": "X86_V3", "OPENBLAS_CORETYPE": "Zen"},
        ),
    }
    if qemu and shutil.which("qemu-x86_64"):
        for cpu in ("EPYC-Rome", "Haswell"):
            found[f"qemu-{cpu}"] = (["qemu-x86_64", "-cpu", cpu], native)
        found["qemu-EPYC-Rome-portable"] = (
            ["qemu-x86_64", "-cpu", "EPYC-Rome"],
            runtime.with_portable(base, on=True),
        )
    return found


def child(prefix: list[str], env: dict[str, str], args: list[str]) -> dict:
    cmd = [*prefix, sys.executable, __file__, "worker", *args]
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise SystemExit(f"{cmd} failed:\n{done.stderr[-2000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("what", choices=["paths", "hashes", "cost", "worker"])
    ap.add_argument("--data", default=DATA)
    ap.add_argument("--images", type=int, default=2000, help="0: the whole fit split")
    ap.add_argument("--dtypes", nargs="+", default=["float64", "float32"])
    ap.add_argument("--repeats", type=int, default=5, help="cost: epochs per mode (median)")
    ap.add_argument("--no-qemu", action="store_true", help="hashes: skip the emulated CPUs")
    args = ap.parse_args(argv)
    if args.what == "worker":
        print(json.dumps(worker(args.data, args.images, args.dtypes)))
        return 0

    work = ["--data", args.data, "--dtypes", *args.dtypes]
    if args.what == "paths":
        for name, (prefix, env) in modes(qemu=not args.no_qemu).items():
            code = "import pipeline; from pipeline import runtime; print(runtime.simd_paths())"
            done = subprocess.run(
                [*prefix, sys.executable, "-c", code], env=env, capture_output=True, text=True
            )
            print(f"{name:26} {done.stdout.strip() or done.stderr.strip()[-300:]}")
        return 0
    if args.what == "hashes":
        results = {}
        for name, (prefix, env) in modes(qemu=not args.no_qemu).items():
            results[name] = child(prefix, env, [*work, "--images", str(args.images)])
            row = "  ".join(f"{d} {results[name][d]['sha256'][:16]}" for d in args.dtypes)
            print(f"{name:26} {results[name]['simd']:34} {row}", flush=True)
        reference = results.get("qemu-EPYC-Rome", results["avx2-other"])
        for d in args.dtypes:
            same = sorted(n for n, r in results.items() if r[d]["sha256"] == reference[d]["sha256"])
            print(f"{d}: equal to the AVX2 reference: {', '.join(same)}")
        return 0
    # cost: one epoch over the fit split per child, portable off and on alternating
    # CPU seconds of the training process (one BLAS thread) besides wall seconds: on a shared
    # machine, time spent waiting for a core inflates wall time but not CPU time.
    times: dict[str, dict[str, list[float]]] = {"native": {}, "portable": {}}
    walls: dict[str, dict[str, list[float]]] = {"native": {}, "portable": {}}
    found = modes(qemu=False)
    simd = {}
    for r in range(args.repeats):
        for name in ("native", "portable") if r % 2 == 0 else ("portable", "native"):
            prefix, env = found[name]
            res = child(prefix, env, [*work, "--images", str(args.images)])
            simd[name] = res["simd"]
            for d in args.dtypes:
                times[name].setdefault(d, []).append(res[d]["cpu"])
                walls[name].setdefault(d, []).append(res[d]["seconds"])
            shown = ", ".join(
                f"{d} {res[d]['cpu']:.2f} s CPU ({res[d]['seconds']:.2f} s wall)"
                for d in args.dtypes
            )
            print(f"repeat {r + 1}/{args.repeats} {name:8}: {shown}", flush=True)
    cpu = next(
        (
            line.split(":", 1)[1].strip()
            for line in Path("/proc/cpuinfo").read_text().splitlines()
            if line.startswith("model name")
        ),
        "?",
    )
    images = args.images or "all"
    print(f"\n{cpu}; {images} images, one epoch, median of {args.repeats}, interleaved")
    for d in args.dtypes:
        off, on = statistics.median(times["native"][d]), statistics.median(times["portable"][d])
        w_off, w_on = (statistics.median(walls[m][d]) for m in ("native", "portable"))
        print(
            f"{d}: CPU s/epoch native {off:.2f} ({simd['native']}), portable {on:.2f} "
            f"({simd['portable']}): x{on / off:.2f}; wall {w_off:.2f} vs {w_on:.2f}"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
