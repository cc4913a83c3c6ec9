"""A run's provenance: the engine, the packages that shape results, the project's commit, the host.

Read once per process (cached): the git commit comes from the checkout's files (HEAD, the ref it
names, packed-refs), without a subprocess; outside a git checkout it is None.
"""

from __future__ import annotations

import platform
import socket
from functools import cache
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

from domain.engine import ENGINE_VERSION
from domain.run import Provenance

RESULT_PACKAGES = ("msgspec",)
"""Packages whose version can change a run's results or digest (msgspec writes the canonical
JSON the digest hashes). The search side adds its samplers' libraries to experiments."""

PROJECT_ROOT = Path(__file__).resolve().parent.parent


def _package_version(name: str) -> str:
    try:
        return version(name)
    except PackageNotFoundError:
        return "(not installed)"


def _git_dir(root: Path) -> Path | None:
    """The git directory of a checkout at ``root`` (a worktree's ``.git`` is a file)."""
    dot_git = root / ".git"
    if dot_git.is_dir():
        return dot_git
    if dot_git.is_file():
        text = dot_git.read_text(encoding="utf-8", errors="replace").strip()
        if text.startswith("gitdir:"):
            found = Path(text.removeprefix("gitdir:").strip())
            return found if found.is_absolute() else (root / found).resolve()
    return None


def git_commit(root: Path = PROJECT_ROOT) -> str | None:
    """The commit checked out at ``root``, read from git's files; None if there is none."""
    try:
        git_dir = _git_dir(root)
        if git_dir is None:
            return None
        head = (git_dir / "HEAD").read_text(encoding="utf-8").strip()
        if not head.startswith("ref:"):
            return head or None  # a detached HEAD holds the commit itself
        ref = head.removeprefix("ref:").strip()
        common = git_dir
        if (git_dir / "commondir").is_file():
            common = (
                git_dir / (git_dir / "commondir").read_text(encoding="utf-8").strip()
            ).resolve()
        for base in (git_dir, common):
            loose = base / ref
            if loose.is_file():
                return loose.read_text(encoding="utf-8").strip() or None
        packed = common / "packed-refs"
        if packed.is_file():
            for line in packed.read_text(encoding="utf-8").splitlines():
                parts = line.split()
                if len(parts) == 2 and parts[1] == ref:
                    return parts[0]
    except OSError:
        return None
    return None


@cache
def current_provenance() -> Provenance:
    """This process's provenance (computed once)."""
    return Provenance(
        engine_version=ENGINE_VERSION,
        python=f"{platform.python_implementation()} {platform.python_version()}",
        packages={name: _package_version(name) for name in RESULT_PACKAGES},
        git_commit=git_commit(),
        host=socket.gethostname(),
    )
