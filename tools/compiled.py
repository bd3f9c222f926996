"""A compiled copy of the repository (mypyc, ``setup.py``), for the benchmarks and for testing
the build the images ship without putting extension modules into the working tree (where
they would shadow every later edit of the modules they come from).

    python -m tools.compiled            # build (or reuse) build/compiled, print its path

The copy holds the package, the tests and the benchmarks. It is compiled again only when a
file of the package, ``setup.py``, ``pyproject.toml`` or the Python version changed; the
tests, benchmarks, examples and README are brought up to date at every call (what a run leaves
behind, such as ``bench/results``, caches and hypothesis databases, is neither copied nor
hashed). Run things from it with ``cwd`` set to it (``python -m`` puts the working
directory first on ``sys.path``) or with ``PYTHONPATH`` naming it and ``PYTHONSAFEPATH=1``.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
from pathlib import Path

REPO_DIR = Path(__file__).resolve().parent.parent
COMPILED_DIR = REPO_DIR / "build" / "compiled"
BUILT = ("sidecars", "setup.py", "pyproject.toml")  # what the compiler reads
RUN = ("tests", "bench", "examples", "README.md")  # what runs against it, and the README
_STAMP = ".sources-hash"
# What runs leave in the copied directories: results, caches, bytecode, build output.
_NOT_SOURCES = frozenset(
    ("__pycache__", ".hypothesis", ".pytest_cache", ".mypy_cache", ".ruff_cache", "results")
)
_NOT_SOURCE_SUFFIXES = (".so", ".pyc", ".pyo")


class CompileError(RuntimeError):
    """The compiled build failed (its output is in the message)."""


def source_files(names: tuple[str, ...], root: Path = REPO_DIR) -> list[Path]:
    """The source files under ``names`` in ``root`` (the repository), relative to it."""
    found: list[Path] = []
    for name in names:
        path = root / name
        files = [path] if path.is_file() else sorted(path.rglob("*"))
        for file in files:
            relative = file.relative_to(root)
            if (
                file.is_file()
                and _NOT_SOURCES.isdisjoint(relative.parts)
                and not file.name.endswith(_NOT_SOURCE_SUFFIXES)
                and not any(part.endswith(".egg-info") for part in relative.parts)
            ):
                found.append(relative)
    return found


def sources_hash(files: list[Path]) -> str:
    digest = hashlib.sha256(sys.version.encode())
    for relative in files:
        digest.update(str(relative).encode())
        digest.update((REPO_DIR / relative).read_bytes())
    return digest.hexdigest()


def compiled_tree() -> Path:
    """``build/compiled``: the repository's sources with the compiled modules beside them,
    and every module compiled to bytecode (as pip does in the images)."""
    built = source_files(BUILT)
    wanted = sources_hash(built)
    stamp = COMPILED_DIR / _STAMP
    if not (stamp.exists() and stamp.read_text() == wanted):
        shutil.rmtree(COMPILED_DIR, ignore_errors=True)
        _copy(built)
        _compile()
        stamp.write_text(wanted)
    run = source_files(RUN)
    for gone in set(source_files(RUN, COMPILED_DIR)) - set(run):
        (COMPILED_DIR / gone).unlink()
    _copy(run)
    return COMPILED_DIR


def _copy(files: list[Path]) -> None:
    """Copy what is missing or differs (a file in use by a running test stays untouched)."""
    for relative in files:
        source, copy = REPO_DIR / relative, COMPILED_DIR / relative
        if copy.exists() and copy.read_bytes() == source.read_bytes():
            continue
        copy.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(source, copy)


def _compile() -> None:
    env = {**os.environ, "SIDECARS_COMPILE": "1"}
    jobs = str(os.cpu_count() or 1)  # one C compile per group (setup.py's COMPILED_GROUPS)
    for command in (
        [sys.executable, "setup.py", "--quiet", "build_ext", "--inplace", "--parallel", jobs],
        [sys.executable, "-m", "compileall", "-q", "sidecars"],
    ):
        done = subprocess.run(
            command, cwd=COMPILED_DIR, env=env, capture_output=True, text=True, check=False
        )
        if done.returncode != 0:
            raise CompileError(f"{' '.join(command)} failed:\n{done.stdout}{done.stderr}")


def main() -> None:
    try:
        print(compiled_tree())
    except CompileError as error:
        sys.exit(str(error))


if __name__ == "__main__":
    main()
