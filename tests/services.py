"""Services on loopback for the end-to-end tests, started through the repository's own scripts
(what a user runs): PostgreSQL (`scripts/postgres-local`), a single-node Slurm cluster
(`scripts/slurm-local`), and the team's MLflow server over PostgreSQL
(`pipeline.tracking.server.Server`, as `python -m pipeline.server` starts it). A script that
exits 3 cannot run here (not root, or its Debian packages missing): the fixtures then skip with
its message, which names the packages."""

from __future__ import annotations

import shutil
import socket
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
CANNOT_RUN_HERE = 3  # the scripts' exit status when the service cannot run on this machine


def free_port(pair: bool = False) -> int:
    """A free loopback port (with `pair`, one whose successor is free too)."""
    for _ in range(50):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        if not pair or port >= 65535:
            return port
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port + 1))
                return port
            except OSError:
                continue
    raise RuntimeError("no free port pair")


def script(name: str, *args: str, check: bool = True) -> subprocess.CompletedProcess:
    done = subprocess.run(
        [str(REPO / "scripts" / name), *args], capture_output=True, text=True, timeout=600
    )
    if done.returncode == CANNOT_RUN_HERE:
        pytest.skip(f"{name}: {done.stderr.strip()}")
    if check and done.returncode != 0:
        raise AssertionError(f"{name} {' '.join(args)} failed:\n{done.stdout}\n{done.stderr}")
    return done


@dataclass
class Postgres:
    """A PostgreSQL server on 127.0.0.1:`port`: database and role `mlflow`, its password in
    `dir`/pgpass (PGPASSFILE), never in the URI."""

    dir: Path
    port: int

    @property
    def uri(self) -> str:
        return f"postgresql+psycopg://mlflow@127.0.0.1:{self.port}/mlflow"

    @property
    def env(self) -> dict[str, str]:
        return {"PGPASSFILE": str(self.dir / "pgpass")}

    @property
    def password(self) -> str:
        return (self.dir / "pgpass").read_text().strip().split(":", 4)[4]

    def up(self) -> Postgres:
        script("postgres-local", "up", "--dir", str(self.dir), "--port", str(self.port))
        return self

    def down(self) -> None:
        script("postgres-local", "down", "--dir", str(self.dir))


def start_postgres() -> Postgres:
    # The server runs as the `postgres` user, which must reach its folder: not under pytest's
    # private (0700) temporary root.
    base = Path(tempfile.mkdtemp(prefix="pipeline-test-pg-"))
    base.chmod(0o755)
    try:
        return Postgres(base, free_port()).up()
    except BaseException:
        shutil.rmtree(base, ignore_errors=True)
        raise


@dataclass
class Slurm:
    """A one-node Slurm cluster (partition `local`); clients need `env` (SLURM_CONF)."""

    dir: Path

    @property
    def env(self) -> dict[str, str]:
        return {"SLURM_CONF": str(self.dir / "slurm.conf")}

    def down(self) -> None:
        script("slurm-local", "down", "--dir", str(self.dir))


def start_slurm(base: Path, cpus: int) -> Slurm:
    port = str(free_port(pair=True))
    script("slurm-local", "up", "--dir", str(base), "--port", port, "--cpus", str(cpus))
    return Slurm(base)


def slurm_launcher(experiment: str, *extra: str) -> list[str]:
    """Overrides for a sweep through the local cluster, into its own experiment."""
    return [
        "hydra/launcher=submitit_slurm",
        "hydra.launcher.partition=local",
        "hydra.launcher.cpus_per_task=1",
        "hydra.launcher.timeout_min=10",
        f"tracking.experiment={experiment}",
        *extra,
    ]


def rss_mib(pids: list[int]) -> float:
    """Resident memory of these processes together, in MiB (0 for those gone)."""
    total = 0
    for pid in pids:
        try:
            status = Path(f"/proc/{pid}/status").read_text()
        except OSError:
            continue
        for line in status.splitlines():
            if line.startswith("VmRSS:"):
                total += int(line.split()[1])
    return total / 1024
