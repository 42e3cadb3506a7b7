"""A logged run's commit in a temporary git worktree, and the run's data found by its hash.

The worktree is a second checkout of the same repository (`git worktree add --detach`), so the
user's work tree, index and branches are never touched; it is removed afterwards, whatever
happens. The prepared file is looked for by the sha256 the run logged, in order: the user's work
tree; DVC's cache or remote, through the commit's dvc.lock; `dvc repro prepare` in the worktree
(fetch and prepare from the dataset's sources). Each source that fails says why.
"""

from __future__ import annotations

import contextlib
import shutil
import subprocess
import tempfile
from collections.abc import Iterator, Mapping
from pathlib import Path

from pipeline.files import atomic_path, sha256_file


class CheckoutError(RuntimeError):
    """The commit could not be checked out; the message says why."""


def _git(repo: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(["git", *args], cwd=repo, capture_output=True, text=True, check=False)


def has_commit(repo: Path, commit: str) -> bool:
    """Whether `commit` is a commit of the repository at `repo`."""
    return _git(repo, "cat-file", "-e", f"{commit}^{{commit}}").returncode == 0


@contextlib.contextmanager
def worktree(repo: Path, commit: str) -> Iterator[Path]:
    """Yield a temporary worktree of `repo` at `commit` (detached); removed on exit."""
    tmp = Path(tempfile.mkdtemp(prefix="pipeline-verify-"))
    tree = tmp / "tree"
    done = _git(repo, "worktree", "add", "--detach", "--quiet", str(tree), commit)
    if done.returncode != 0:
        shutil.rmtree(tmp, ignore_errors=True)
        raise CheckoutError(f"git worktree add {commit} failed: {done.stderr.strip()}")
    try:
        yield tree
    finally:
        _git(repo, "worktree", "remove", "--force", str(tree))
        shutil.rmtree(tmp, ignore_errors=True)
        _git(repo, "worktree", "prune")


def _from_dvc(repo: Path, commit: str, rel: str, dest: Path) -> None:
    """Copy `rel` as the commit's dvc.lock records it, from DVC's cache or else its remote."""
    import dvc.api

    with (
        dvc.api.open(rel, repo=str(repo), rev=commit, mode="rb") as src,
        atomic_path(dest) as tmp,
        open(tmp, "wb") as out,
    ):
        shutil.copyfileobj(src, out, 1 << 20)


def get_prepared(
    *, repo: Path, tree: Path, commit: str, rel: str, sha256: str, env: Mapping[str, str]
) -> tuple[str | None, list[str]]:
    """Put the prepared file whose hash is `sha256` at `tree`/`rel` (module docstring).

    Returns (the sha256 of the file it ended with, or None; one note per source tried).
    """
    dest = tree / rel
    notes: list[str] = []
    local = repo / rel
    if local.is_file():
        got = sha256_file(local)
        if got == sha256:
            dest.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(local, dest)
            return got, [f"{rel} from the work tree"]
        notes.append(f"the work tree's {rel} has sha256 {got}")
    else:
        notes.append(f"no {rel} in the work tree")
    try:
        _from_dvc(repo, commit, rel, dest)
        got = sha256_file(dest)
        if got == sha256:
            return got, [*notes, f"{rel} from DVC's cache or remote, by the commit's dvc.lock"]
        notes.append(f"DVC's copy at that commit has sha256 {got}")
    except Exception as exc:  # any failure here means: try the next source
        notes.append(f"not from DVC's cache or remote ({type(exc).__name__}: {exc})".strip())
    dest.unlink(missing_ok=True)
    try:
        done = subprocess.run(
            ["dvc", "repro", "prepare"], cwd=tree, env=dict(env), capture_output=True, text=True
        )
    except FileNotFoundError:
        return None, [*notes, "`dvc` is not on PATH: cannot fetch and prepare"]
    if done.returncode != 0 or not dest.is_file():
        tail = (done.stderr or done.stdout).strip().splitlines()[-3:]
        notes.append(f"`dvc repro prepare` failed: {' '.join(tail)}")
        return None, notes
    got = sha256_file(dest)
    note = "fetched and prepared again (`dvc repro prepare`)"
    return got, [*notes, note if got == sha256 else f"{note}: sha256 {got}"]
