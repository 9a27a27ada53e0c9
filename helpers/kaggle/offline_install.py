"""Offline installs on Kaggle: when a wheels folder (tools/build_wheels.sh) is attached, install
from it with ``pip install --no-index --find-links``; anywhere else, do nothing.

Every notebook's first cell calls :func:`install_wheels`. A wheels folder is ``$EEDI_WHEELS``, or
the first ``/kaggle/input/*`` folder holding a ``requirements.txt`` next to ``*.whl`` files.
"""
from __future__ import annotations

import glob
import os
import subprocess
import sys

DONE_MARKER = "/tmp/.eedi_wheels_installed"


def find_wheels(search: str = "/kaggle/input/*/requirements.txt") -> str | None:
    env = os.environ.get("EEDI_WHEELS")
    if env:
        if not os.path.isfile(os.path.join(env, "requirements.txt")):
            raise FileNotFoundError(f"EEDI_WHEELS={env}: no requirements.txt there (build it with tools/build_wheels.sh)")
        return env
    for req in sorted(glob.glob(search)):
        folder = os.path.dirname(req)
        if glob.glob(os.path.join(folder, "*.whl")):
            return folder
    return None


def install_command(folder: str) -> list[str]:
    return [sys.executable, "-m", "pip", "install", "-q", "--no-index", "--find-links", folder,
            "-r", os.path.join(folder, "requirements.txt")]


def install_wheels(search: str = "/kaggle/input/*/requirements.txt", marker: str = DONE_MARKER,
                   run=subprocess.run) -> list[str] | None:
    """Install from an attached wheels folder once per machine session; return the command run."""
    folder = find_wheels(search)
    if folder is None or os.path.exists(marker):
        return None
    cmd = install_command(folder)
    print("offline install:", " ".join(cmd), flush=True)
    run(cmd, check=True)
    open(marker, "w").close()
    return cmd
