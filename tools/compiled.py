"""A compiled copy of the repository (mypyc, ``setup.py``), for the benchmarks and for testing
the build the images ship without putting extension modules into the working tree (where
they would shadow every later edit of the modules they come from).

    python -m tools.compiled            # build (or reuse) build/compiled, print its path

The copy holds the package, the tests and the benchmarks; it is rebuilt only when a source
file, ``setup.py`` or the Python version changed. Run things from it with ``cwd`` set to it
(``python -m`` puts the working directory first on ``sys.path``) or with ``PYTHONPATH``
naming it and ``PYTHONSAFEPATH=1``.
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
_IGNORED = shutil.ignore_patterns("__pycache__", "*.so", "*.pyc", ".hypothesis", "results")


class CompileError(RuntimeError):
    """The compiled build failed (its output is in the message)."""


def sources_hash() -> str:
    digest = hashlib.sha256(sys.version.encode())
    for name in COPIED:
        path = REPO_DIR / name
        files = [path] if path.is_file() else sorted(path.rglob("*"))
        for file in files:
            if file.is_file() and "__pycache__" not in file.parts and file.suffix != ".so":
                digest.update(str(file.relative_to(REPO_DIR)).encode())
                digest.update(file.read_bytes())
    return digest.hexdigest()


def compiled_tree() -> Path:
    """``build/compiled``: the repository's sources with the compiled modules beside them,
    and every module compiled to bytecode (as pip does in the images)."""
    wanted = sources_hash()
    stamp = COMPILED_DIR / _STAMP
    if stamp.exists() and stamp.read_text() == wanted:
        return COMPILED_DIR
    shutil.rmtree(COMPILED_DIR, ignore_errors=True)
    COMPILED_DIR.mkdir(parents=True)
    for name in COPIED:
        source = REPO_DIR / name
        if source.is_dir():
            shutil.copytree(source, COMPILED_DIR / name, ignore=_IGNORED)
        else:
            shutil.copy2(source, COMPILED_DIR / name)
    env = {**os.environ, "SIDECARS_COMPILE": "1"}
    for command in (
        [sys.executable, "setup.py", "--quiet", "build_ext", "--inplace"],
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
