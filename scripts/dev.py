#!/usr/bin/env python3
"""Bootstrap and run biomarkers with nothing but python3 (>= 3.11).

    python3 scripts/dev.py demo    # install into .venv, run the end-to-end demo
    python3 scripts/dev.py test    # install into .venv, run the whole test suite
    python3 scripts/dev.py shell   # print how to activate the environment

The virtual environment lives in ``.venv`` beside this repository; it is
(re)installed whenever ``pyproject.toml`` changes. Extra arguments after the
command are passed on (to pytest for ``test``, to ``biomarkers demo`` for ``demo``).
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import venv
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
VENV = Path(os.environ.get("BIOMARKERS_VENV", ROOT / ".venv"))
BIN = VENV / ("Scripts" if os.name == "nt" else "bin")
PY = BIN / ("python.exe" if os.name == "nt" else "python")


def _run(cmd: list[str], **kw) -> int:
    print("+", " ".join(str(c) for c in cmd), flush=True)
    return subprocess.call([str(c) for c in cmd], **kw)


def ensure_env() -> None:
    if sys.version_info < (3, 11):
        sys.exit(f"biomarkers needs Python >= 3.11 (this is {sys.version.split()[0]})")
    if not PY.exists():
        print(f"creating virtual environment in {VENV}", flush=True)
        venv.EnvBuilder(with_pip=True).create(VENV)
    stamp = VENV / ".biomarkers-installed"
    want = hashlib.sha256((ROOT / "pyproject.toml").read_bytes()).hexdigest()
    if stamp.exists() and stamp.read_text().strip() == want:
        return
    env = dict(os.environ, PIP_DISABLE_PIP_VERSION_CHECK="1")
    if _run([PY, "-m", "pip", "install", "--quiet", "--upgrade", "pip"], env=env) != 0:
        sys.exit("pip upgrade failed")
    if _run([PY, "-m", "pip", "install", "--quiet", "-e", f"{ROOT}[test]"], env=env) != 0:
        sys.exit("installing biomarkers failed (see pip's message above)")
    stamp.write_text(want)


def main(argv: list[str]) -> int:
    if not argv or argv[0] in {"-h", "--help", "help"}:
        print(__doc__)
        return 0
    cmd, rest = argv[0], argv[1:]
    ensure_env()
    os.chdir(ROOT)
    if cmd == "test":
        # -m "not slow" is NOT applied: the whole suite runs (slow tests included).
        return _run([PY, "-m", "pytest", "-p", "no:cacheprovider", *rest])
    if cmd == "demo":
        return _run([BIN / "biomarkers", "demo", *rest])
    if cmd == "shell":
        print(f"source {BIN / 'activate'}")
        return 0
    print(f"unknown command {cmd!r}\n{__doc__}", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
