"""A lean `mlflow server` on loopback over an existing store, for several writing processes."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Mapping

from pipeline.tracking.store import TrackingError, check_reachable


class Server:
    """A lean `mlflow server` on loopback over an existing store, for several writing processes.

    MLFLOW_SERVER_ENABLE_JOB_EXECUTION=false and one worker: 2 processes and ~460 MB instead of
    ~15 and 2.4 GB. It runs under `pipeline.tracking.guard` in its own process group, so `stop`
    ends its workers too, and it ends with the process that started it, even on kill -9.
    """

    def __init__(
        self, backend_uri: str, *, env: Mapping[str, str], port: int | None = None
    ) -> None:
        self.backend_uri = backend_uri
        self.env = {**env, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}
        self.port = port or _free_port()
        self.uri = f"http://127.0.0.1:{self.port}"
        self.proc: subprocess.Popen | None = None

    def start(self, timeout_s: float = 90.0) -> Server:
        guard = [sys.executable, "-m", "pipeline.tracking.guard", str(os.getpid()), "--"]
        cmd = [
            *guard,
            sys.executable,
            "-m",
            "mlflow",
            "server",
            "--host",
            "127.0.0.1",
            "--port",
            str(self.port),
            "--workers",
            "1",
            "--backend-store-uri",
            self.backend_uri,
        ]
        self.proc = subprocess.Popen(
            cmd,
            env=self.env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            start_new_session=True,
        )
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                err = self.proc.stderr.read().decode(errors="replace")[-2000:]
                raise TrackingError(f"mlflow server exited ({self.proc.returncode}): {err}")
            try:
                check_reachable(self.uri, timeout_s=1.0)
                return self
            except TrackingError:
                time.sleep(0.25)
        self.stop()
        raise TrackingError(f"mlflow server on {self.uri} did not answer in {timeout_s:.0f} s")

    def stop(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGTERM)
        try:
            self.proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]
