"""Atomic writes leave nothing partial; the deterministic formats give the same bytes."""

import os
import signal
import threading
import time

import numpy as np
import pytest

from pipeline import interrupts
from pipeline.files import (
    atomic_path,
    atomic_write_bytes,
    read_npz,
    save_npz,
    write_csv,
    write_json,
    write_together,
)


def test_atomic_write_replaces_only_on_success(tmp_path):
    dest = tmp_path / "out.bin"
    dest.write_bytes(b"good")
    with pytest.raises(RuntimeError), atomic_path(dest) as tmp:
        tmp.write_bytes(b"half")
        raise RuntimeError("interrupted")
    assert dest.read_bytes() == b"good"
    assert list(tmp_path.iterdir()) == [dest]  # no temporary file left behind
    atomic_write_bytes(dest, b"new")
    assert dest.read_bytes() == b"new"


def test_atomic_write_survives_keyboard_interrupt(tmp_path):
    dest = tmp_path / "out.bin"
    with pytest.raises(KeyboardInterrupt), atomic_path(dest) as tmp:
        tmp.write_bytes(b"half")
        raise KeyboardInterrupt
    assert not dest.exists()
    assert list(tmp_path.iterdir()) == []


def test_npz_bytes_depend_only_on_the_arrays(tmp_path):
    arrays = {"b": np.arange(6.0).reshape(2, 3), "a": np.array([1, 2], np.uint8)}
    save_npz(tmp_path / "x.npz", arrays)
    save_npz(tmp_path / "y.npz", dict(reversed(list(arrays.items()))))  # other insertion order
    assert (tmp_path / "x.npz").read_bytes() == (tmp_path / "y.npz").read_bytes()
    back = read_npz(tmp_path / "x.npz", fix="rebuild it")
    assert set(back) == {"a", "b"} and back["a"].dtype == np.uint8
    np.testing.assert_array_equal(back["b"], arrays["b"])


def test_json_and_csv_are_stable_text(tmp_path):
    write_json(tmp_path / "m.json", {"z": 0.1, "a": 3})
    assert (tmp_path / "m.json").read_text() == '{\n  "a": 3,\n  "z": 0.1\n}\n'
    write_csv(tmp_path / "p.csv", ["step", "loss"], [(np.int64(1), np.float32(0.1)), (2, 1 / 3)])
    # floats as repr of the float64 value: round-trips exactly
    assert (
        tmp_path / "p.csv"
    ).read_text() == "step,loss\n1,0.10000000149011612\n2,0.3333333333333333\n"


def test_write_together_replaces_all_or_nothing(tmp_path, monkeypatch):
    a, b = tmp_path / "a.txt", tmp_path / "sub" / "b.txt"
    a.write_bytes(b"old a")
    write_together({a: b"new a", b: b"new b"})
    assert (a.read_bytes(), b.read_bytes()) == (b"new a", b"new b")

    real_fsync = os.fsync
    calls = []

    def fail_second(fd):  # the second file cannot be written: nothing may change
        calls.append(fd)
        if len(calls) == 2:
            raise OSError("disk full")
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", fail_second)
    with pytest.raises(OSError, match="disk full"):
        write_together({a: b"newer a", b: b"newer b"})
    assert (a.read_bytes(), b.read_bytes()) == (b"new a", b"new b")
    assert sorted(p.name for p in tmp_path.rglob("*")) == ["a.txt", "b.txt", "sub"]


def test_signals_are_delivered_after_a_deferred_block():
    received = []
    old = signal.signal(signal.SIGTERM, lambda s, f: received.append(s))
    try:
        with interrupts.deferred():
            os.kill(os.getpid(), signal.SIGTERM)
            assert received == []  # held back while the group of files is renamed
        assert received == [signal.SIGTERM]
    finally:
        signal.signal(signal.SIGTERM, old)


def test_a_deferred_block_holds_signals_that_another_thread_receives():
    # A process-directed signal may land on any thread (BLAS, training, tqdm's monitor); its C
    # handler then has the main thread run the Python handler. Aim one at another thread.
    received = []
    ready, done = threading.Event(), threading.Event()
    other = threading.Thread(target=lambda: (ready.set(), done.wait(10)))
    old = signal.signal(signal.SIGTERM, lambda s, f: received.append(s))
    other.start()
    try:
        ready.wait(10)
        with interrupts.deferred():
            signal.pthread_kill(other.ident, signal.SIGTERM)
            time.sleep(0.05)  # bytecode boundaries where a pending handler would run
            assert received == []
        assert received == [signal.SIGTERM]
    finally:
        done.set()
        other.join()
        signal.signal(signal.SIGTERM, old)
