"""Checkpoints: where a training run stands, saved so that a later process continues it exactly.

A checkpoint holds a `sgd.TrainState` (parameters in the training dtype, the epoch and batch
counters, the epoch's order and running sums, every batch loss and per-epoch metric so far), the
state of the run's order generator (`plan.ResumableOrder.state`: the default mode's PCG64, the
toolbox replay's Mersenne Twister and its counters), the MLflow run it belongs to, and the run's
`Identity`: its configuration, code, data and environment. Resuming requires the same identity,
so a resumed run is the same computation as an uninterrupted one and ends with the same bytes.

Files: one uncompressed `.npz` (arrays, and the rest as JSON in a `meta` member; never pickled),
written atomically (`files.atomic_write_bytes`: complete or absent). Each run configuration has
a `Slot`, a folder under `checkpoints/` named after the run and its configuration's hash,
outside DVC's outputs; a process training in a slot holds its lock (`fcntl.flock`, released by
the kernel when the process dies, even by SIGKILL), so a held lock means a live process.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import io
import json
import os
import socket
import time
import zipfile
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from pipeline.files import atomic_write_bytes, npz_bytes
from pipeline.model import cnn
from pipeline.model.sgd import TrainState

FORMAT = 1  # bumped when the file's layout changes; other formats are refused
FILE, LOCK = "checkpoint.npz", "lock"
SHOWN = 4  # differences named per kind in a refusal


class CheckpointError(RuntimeError):
    """A checkpoint cannot be used (unreadable, or held by a live process); says which and why."""


def _sha(value: Any) -> str:
    return hashlib.sha256(json.dumps(value, sort_keys=True).encode()).hexdigest()


@dataclass(frozen=True)
class Identity:
    """What decides a run's bytes.

    config: the resolved configuration, flat (`train.lr`: 1.0), without `config.RESUME_KEYS`;
    code: {file of the pipeline package: sha256}; data: the prepared file's sha256;
    environment: what else decides the bytes (BLAS threads, portable mode, SIMD paths, NumPy).
    """

    config: Mapping[str, Any]
    code: Mapping[str, str]
    data: str
    environment: Mapping[str, str]

    @property
    def config_sha256(self) -> str:
        return _sha(dict(self.config))

    @property
    def code_sha256(self) -> str:
        return _sha(dict(self.code))

    def differences(self, current: Identity) -> list[str]:
        """What differs from `current`, one phrase per kind ("config: train.lr 0.5 -> 1.0"),
        empty when this checkpoint's run is the current one."""
        out = []
        changed = _changed(self.config, current.config)
        if changed:
            out.append(f"config: {_some(changed)}")
        files = sorted(set(self.code) | set(current.code))
        edited = [f for f in files if self.code.get(f) != current.code.get(f)]
        if edited:
            out.append(f"code: {_some([f + ' changed' for f in edited])}")
        if self.data != current.data:
            out.append(f"data: sha256 {self.data[:12]}... -> {current.data[:12]}...")
        env = _changed(self.environment, current.environment)
        if env:
            out.append(f"environment: {_some(env)}")
        return out


def _changed(old: Mapping[str, Any], new: Mapping[str, Any]) -> list[str]:
    keys = sorted(set(old) | set(new))
    return [f"{k} {old.get(k)} -> {new.get(k)}" for k in keys if old.get(k) != new.get(k)]


def _some(items: list[str]) -> str:
    more = f" (and {len(items) - SHOWN} more)" if len(items) > SHOWN else ""
    return ", ".join(items[:SHOWN]) + more


@dataclass
class Checkpoint:
    """A run's saved state (module docstring)."""

    identity: Identity
    run_id: str
    state: TrainState
    order: dict[str, Any]  # the order generator's state (`ResumableOrder.state()`)

    def where(self) -> str:
        """ "epoch 3, batch 120" (the batch within the epoch); "the end of epoch 2"."""
        if self.state.batch == 0:
            return f"the end of epoch {self.state.epoch - 1}"
        return f"epoch {self.state.epoch}, batch {self.state.batch}"


def to_bytes(ckpt: Checkpoint) -> bytes:
    """The checkpoint as one uncompressed `.npz` (the state's arrays, the rest as JSON)."""
    s = ckpt.state
    keys = list(s.history[0]) if s.history else []
    meta = {
        "format": FORMAT,
        "run_id": ckpt.run_id,
        "epoch": s.epoch,
        "batch": s.batch,
        "step": s.step,
        "wrong": s.wrong,
        "history_keys": keys,
        "order": ckpt.order,
        "identity": {
            "config": dict(ckpt.identity.config),
            "code": dict(ckpt.identity.code),
            "data": ckpt.identity.data,
            "environment": dict(ckpt.identity.environment),
        },
        "written_by": {"host": socket.gethostname(), "pid": os.getpid(), "time": time.time()},
    }
    arrays = {f"param_{k}": v for k, v in s.params.items()}
    arrays |= {
        "losses": np.asarray(s.losses[: s.step], np.float64),  # (step,)
        "history": np.array([[h[k] for k in keys] for h in s.history], np.float64),  # (E, K)
        "loss_sum": np.asarray([s.loss_sum]),  # (1,), in its own type: float, or a NumPy scalar
        "meta": np.frombuffer(json.dumps(meta).encode(), np.uint8),
    }
    if s.perm is not None and s.batch:  # inside an epoch: its order
        arrays["perm"] = np.asarray(s.perm, np.int64)
    return npz_bytes(arrays)


def from_bytes(data: bytes) -> Checkpoint:
    """The checkpoint `to_bytes` wrote; ValueError when the bytes are not one."""
    try:
        with np.load(io.BytesIO(data), allow_pickle=False) as npz:
            arrays = {k: npz[k] for k in npz.files}
        meta = json.loads(arrays["meta"].tobytes().decode())
    except (KeyError, ValueError, OSError, zipfile.BadZipFile) as exc:
        raise ValueError(f"not a checkpoint ({exc})") from None
    if meta.get("format") != FORMAT:
        raise ValueError(f"checkpoint format {meta.get('format')}, this code reads {FORMAT}")
    keys = meta["history_keys"]
    state = TrainState(
        params={k: arrays[f"param_{k}"] for k in cnn.PARAM_NAMES},
        epoch=int(meta["epoch"]),
        batch=int(meta["batch"]),
        perm=arrays.get("perm"),
        loss_sum=_scalar(arrays["loss_sum"]),
        wrong=int(meta["wrong"]),
        step=int(meta["step"]),
        losses=arrays["losses"],
        history=[dict(zip(keys, map(float, row), strict=True)) for row in arrays["history"]],
    )
    ident = meta["identity"]
    identity = Identity(ident["config"], ident["code"], ident["data"], ident["environment"])
    return Checkpoint(identity, meta["run_id"], state, meta["order"])


def _scalar(saved: np.ndarray) -> Any:
    """The running sum as it was: a Python float (saved as float64), else a NumPy scalar of its
    own type, so that the sums that follow round as they would have."""
    return saved[0].item() if saved.dtype == np.float64 else saved[0]


class Slot:
    """The folder of one run configuration's checkpoint (module docstring)."""

    def __init__(self, folder: Path) -> None:
        self.folder = Path(folder)
        self.file = self.folder / FILE

    def __str__(self) -> str:
        return _shown(self.folder)

    @property
    def shown(self) -> str:
        """The checkpoint file's path, relative to the working directory when inside it."""
        return _shown(self.file)

    @contextlib.contextmanager
    def locked(self) -> Iterator[Slot]:
        """Hold the slot for a training; CheckpointError when another live process holds it."""
        self.folder.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.folder / LOCK, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                holder = os.pread(fd, 200, 0).decode(errors="replace").strip() or "unknown"
                raise CheckpointError(
                    f"another process ({holder}) is training this configuration now "
                    f"(it holds {self.folder}): wait for it to end, or stop it"
                ) from None
            os.ftruncate(fd, 0)
            os.pwrite(fd, f"pid {os.getpid()} on {socket.gethostname()}\n".encode(), 0)
            yield self
        finally:
            os.close(fd)  # releases the lock

    def read(self) -> Checkpoint | None:
        """The slot's checkpoint; None when there is none. CheckpointError when unreadable."""
        try:
            data = self.file.read_bytes()
        except FileNotFoundError:
            return None
        try:
            return from_bytes(data)
        except ValueError as exc:
            raise CheckpointError(f"{self.file}: {exc}") from None

    def write(self, ckpt: Checkpoint) -> None:
        """Replace the slot's checkpoint, atomically (the old one stays until the new one is
        complete)."""
        atomic_write_bytes(self.file, to_bytes(ckpt))

    def remove(self) -> None:
        """Drop the checkpoint (its run finished) and the slot's folder."""
        self.file.unlink(missing_ok=True)
        (self.folder / LOCK).unlink(missing_ok=True)
        with contextlib.suppress(OSError):
            self.folder.rmdir()


def _shown(path: Path) -> str:
    rel = os.path.relpath(path)
    return str(path) if rel.startswith("..") else rel


def slot_name(run_name: str, identity: Identity) -> str:
    """A slot's folder name: the run's name and its configuration's hash (first 12 digits)."""
    return f"{run_name}-{identity.config_sha256[:12]}"
