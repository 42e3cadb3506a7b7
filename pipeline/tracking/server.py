"""A lean `mlflow server`: over the local SQLite store for a sweep's parallel jobs, or over
PostgreSQL with artifacts it stores itself, for a team and a cluster (`python -m
pipeline.server`)."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.parse
from collections.abc import Mapping
from pathlib import Path

from pipeline.tracking.store import TrackingError, check_database, check_reachable, redact

WILDCARDS = ("0.0.0.0", "::", "")


class Server:
    """A lean `mlflow server`, in its own process group so that `stop` ends its workers too.

    MLFLOW_SERVER_ENABLE_JOB_EXECUTION=false and one worker: 2 processes and ~460 MB instead of
    ~15 and 2.4 GB. Inputs: the backend store URI (SQLite, or `postgresql+psycopg://user@host:
    port/db`: a password in it is moved to PGPASSWORD, off the process list); the environment;
    host (127.0.0.1: this machine only; 0.0.0.0 for other machines); port (default: a free
    one); artifacts_destination (a folder or s3://bucket/prefix: the server stores the runs'
    artifacts there and clients see `mlflow-artifacts:/` locations; None: MLflow's default);
    log_path (the server's output; None: this process's stdout and stderr). It runs under
    `pipeline.tracking.guard`, so it ends with the process that started it, even on kill -9.
    """

    def __init__(
        self,
        backend_uri: str,
        *,
        env: Mapping[str, str],
        host: str = "127.0.0.1",
        port: int | None = None,
        artifacts_destination: str | None = None,
        log_path: Path | None = None,
    ) -> None:
        self.backend_uri = backend_uri
        self.env = {**env, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}
        self.host = host
        self.port = port or _free_port()
        self.artifacts_destination = artifacts_destination
        self.log_path = log_path
        local = "127.0.0.1" if host in WILDCARDS else host
        self.uri = f"http://{local}:{self.port}"  # what this machine connects to
        public = socket.gethostname() if host in WILDCARDS else host
        self.public_uri = f"http://{public}:{self.port}"  # what other machines connect to
        self.proc: subprocess.Popen | None = None

    def start(self, timeout_s: float = 120.0) -> Server:
        """Start and wait until it answers, its store included (a database that is down or
        refuses the credentials fails here, before the server starts, naming it)."""
        backend, password = _split_password(self.backend_uri)
        env = dict(self.env)
        if password is not None:
            env["PGPASSWORD"] = password
        check_database(self.backend_uri, credentials=env)  # as the server will connect
        guard = [sys.executable, "-m", "pipeline.tracking.guard", str(os.getpid()), "--"]
        cmd = [
            *guard,
            sys.executable,
            "-m",
            "mlflow",
            "server",
            "--host",
            self.host,
            "--port",
            str(self.port),
            "--workers",
            "1",
            "--backend-store-uri",
            backend,
        ]
        if self.artifacts_destination:
            cmd += ["--artifacts-destination", self.artifacts_destination]
        # A file, never a pipe: the server logs every request, and an unread pipe fills up and
        # stops it.
        out = open(self.log_path, "ab") if self.log_path else None  # noqa: SIM115
        try:
            self.proc = subprocess.Popen(
                cmd, env=env, stdout=out, stderr=out, start_new_session=True
            )
        finally:
            if out is not None:
                out.close()
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise TrackingError(
                    f"mlflow server over {redact(self.backend_uri)} exited "
                    f"({self.proc.returncode}){self._log_tail()}"
                )
            try:
                check_reachable(self.uri, timeout_s=1.0)  # the store too: warms its engine
                return self
            except TrackingError:
                time.sleep(0.25)
        self.stop()
        raise TrackingError(
            f"mlflow server on {self.uri} did not answer in {timeout_s:.0f} s{self._log_tail()}"
        )

    def _log_tail(self) -> str:
        if self.log_path is None or not Path(self.log_path).is_file():
            return ""
        lines = Path(self.log_path).read_text(errors="replace").splitlines()[-15:]
        return f"; its log ({self.log_path}):\n" + "\n".join(lines)

    def pids(self) -> list[int]:
        """The server's processes (its process group: the guard, the server, its worker)."""
        if self.proc is None:
            return []
        pgid = self.proc.pid
        found = []
        for entry in Path("/proc").iterdir():
            if entry.name.isdigit():
                with contextlib.suppress(OSError):
                    if os.getpgid(int(entry.name)) == pgid:
                        found.append(int(entry.name))
        return found

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


def _split_password(uri: str) -> tuple[str, str | None]:
    """PostgreSQL: (uri without its password, the password or None); else (uri, None)."""
    parts = urllib.parse.urlsplit(uri)
    if parts.password is None or not parts.scheme.startswith("postgresql"):
        return uri, None
    userinfo, hostport = parts.netloc.rsplit("@", 1)
    user = userinfo.split(":", 1)[0]
    bare = urllib.parse.urlunsplit(parts._replace(netloc=f"{user}@{hostport}"))
    return bare, urllib.parse.unquote(parts.password)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]
