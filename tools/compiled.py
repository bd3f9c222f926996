"""A compiled copy of the repository (mypyc, ``setup.py``), for the benchmarks and for testing
the build the images ship without putting extension modules into the working tree (where
they would shadow every later edit of the modules they come from).

    python -m tools.compiled            # build (or reuse) build/compiled, print its path

The copy holds the package, the tests and the benchmarks; it is rebuilt only when a source
file, ``setup.py`` or the Python version changed (what a run leaves behind, such as
``bench/results``, caches and hypothesis databases, is neither copied nor hashed). Run things
from it with ``cwd`` set to it (``python -m`` puts the working directory first on
``sys.path``) or with ``PYTHONPATH`` naming it and ``PYTHONSAFEPATH=1``.
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
COPIED = ("sidecars", "tests", "bench", "examples", "setup.py", "pyproject.toml", "README.md")
_STAMP = ".sources-hash"
# What runs leave in the copied directories: results, caches, bytecode, build output.
_NOT_SOURCES = frozenset(
    ("__pycache__", ".hypothesis", ".pytest_cache", ".mypy_cache", ".ruff_cache", "results")
)
_NOT_SOURCE_SUFFIXES = (".so", ".pyc", ".pyo")


class CompileError(RuntimeError):
    """The compiled build failed (its output is in the message)."""


def source_files() -> list[Path]:
    """The files copied and hashed, relative to the repository."""
    found: list[Path] = []
    for name in COPIED:
        path = REPO_DIR / name
        files = [path] if path.is_file() else sorted(path.rglob("*"))
        for file in files:
            relative = file.relative_to(REPO_DIR)
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
    files = source_files()
    wanted = sources_hash(files)
    stamp = COMPILED_DIR / _STAMP
    if stamp.exists() and stamp.read_text() == wanted:
        return COMPILED_DIR
    shutil.rmtree(COMPILED_DIR, ignore_errors=True)
    COMPILED_DIR.mkdir(parents=True)
    for relative in files:
        (COMPILED_DIR / relative).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(REPO_DIR / relative, COMPILED_DIR / relative)
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
    stamp.write_text(wanted)
    return COMPILED_DIR


def main() -> None:
    try:
        print(compiled_tree())
    except CompileError as error:
        sys.exit(str(error))


if __name__ == "__main__":
    main()
