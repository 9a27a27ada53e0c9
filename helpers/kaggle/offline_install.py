"""Offline installs on Kaggle: install what the image lacks from an attached wheels folder
(tools/build_wheels.sh), with ``pip install --no-index --find-links``; anywhere else, do nothing.

Every notebook's first cell, kaggle/run_all_kaggle.py and kaggle/submit/submit_kaggle.py call
:func:`install_wheels`. The wheels folder is ``$EEDI_WHEELS``, or the folder under ``/kaggle/input``
(``/kaggle/input/<slug>`` or, on newer runtimes, ``/kaggle/input/datasets/<owner>/<slug>``: found by
:mod:`helpers.kaggle.inputs`) that holds ``*.whl`` files next to a ``requirements.txt`` (the code
dataset has a ``requirements.txt`` too, and no wheels).

The plan (:func:`plan_install`) goes requirement by requirement through the folder's
``requirements.txt``: already installed at a version the line allows (Kaggle's image is Python
3.12 with torch, transformers >= 5, accelerate...): left alone; otherwise the wheel in the folder
whose tags fit this interpreter (``packaging.tags.sys_tags``). A line whose comment says
``optional`` (faiss: the exact torch search of helpers/embed/search.py is fast enough for 2,587
passages) is skipped with one log line when no wheel fits; ``import=<module>`` counts any
distribution providing that module (``faiss-cpu`` for ``faiss-gpu-cu12``). A required package
with no fitting wheel stops the install before pip runs, naming the package and the wheel that
would satisfy it. pip runs once for the required wheels (a failure stops, naming what pip
lacked), then once for each optional wheel on its own (faiss-gpu-cu12 needs CUDA runtime wheels the
folder may lack): a failure there is one warning line. The image's torch, transformers and numpy are pinned (a constraints file) so
that a wheel's dependency can never replace them (unless the plan itself upgrades one).
"""
from __future__ import annotations

import glob
import importlib.metadata
import importlib.util
import logging
import os
import re
import subprocess
import sys
import tempfile
from dataclasses import dataclass, field
from typing import Callable, Optional

from helpers.kaggle.inputs import ROOT, candidates

log = logging.getLogger(__name__)

DONE_MARKER = "/tmp/.eedi_wheels_installed"
PINNED = ("torch", "transformers", "numpy")      # what the image brings and nothing may replace
BUILD_HINT = ("rebuild the folder with tools/build_wheels.sh (Python 3.10-3.12), or build it on the exact "
              "image: in a Kaggle notebook with internet on, `!bash tools/build_wheels.sh /kaggle/working/wheels "
              "--here`, then save that folder as the wheels dataset (README \"Run on Kaggle\")")

try:                                                   # Kaggle's image has packaging; pip vendors it too
    from packaging.requirements import Requirement as _Req
    from packaging.tags import sys_tags
    from packaging.utils import canonicalize_name, parse_wheel_filename
    from packaging.version import Version
except ImportError:  # pragma: no cover
    from pip._vendor.packaging.requirements import Requirement as _Req
    from pip._vendor.packaging.tags import sys_tags
    from pip._vendor.packaging.utils import canonicalize_name, parse_wheel_filename
    from pip._vendor.packaging.version import Version


@dataclass
class Line:
    """One requirements line: ``peft>=0.13``, ``faiss-gpu-cu12  # optional import=faiss``."""
    text: str
    name: str
    req: object
    optional: bool = False
    module: Optional[str] = None


@dataclass
class Plan:
    install: list = field(default_factory=list)      # (Line, wheel path)
    present: list = field(default_factory=list)      # (Line, installed version)
    skipped: list = field(default_factory=list)      # (Line, why): optional, no wheel fits
    missing: list = field(default_factory=list)      # (Line, why): required, no wheel fits
    tag: str = ""                                    # the interpreter's most specific wheel tag


def read_requirements(path: str) -> list[Line]:
    out = []
    for raw in open(path, encoding="utf-8"):
        text, _, comment = raw.partition("#")
        text = text.strip()
        if not text or text.startswith("-"):
            continue
        words = re.findall(r"[\w.=]+", comment)       # "optional:", "import=faiss:" -> the words
        module = next((w.split("=", 1)[1] for w in words if w.startswith("import=")), None)
        req = _Req(text)
        out.append(Line(text, canonicalize_name(req.name), req, optional="optional" in words, module=module))
    return out


def installed_version(name: str) -> Optional[str]:
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return None


def _fits(req, version: str) -> bool:
    return req.specifier.contains(Version(version), prereleases=True)


def plan_install(folder: str, installed: Callable[[str], Optional[str]] = installed_version,
                 tags=None, has_module: Callable[[str], bool] = None) -> Plan:
    """What to install from ``folder`` for this interpreter (see the module docstring)."""
    order = list(sys_tags()) if tags is None else list(tags)     # most specific first
    tags = set(order)
    has_module = has_module or (lambda m: importlib.util.find_spec(m) is not None)
    wheels = {}
    for path in sorted(glob.glob(os.path.join(folder, "*.whl"))):
        try:
            name, version, _, wtags = parse_wheel_filename(os.path.basename(path))
        except Exception:         # not a wheel name: ignored
            continue
        wheels.setdefault(name, []).append((version, path, wtags))
    plan = Plan(tag=str(order[0]) if order else "none")   # e.g. cp312-cp312-manylinux_2_35_x86_64
    for line in read_requirements(os.path.join(folder, "requirements.txt")):
        have = installed(line.name)
        if have is not None and _fits(line.req, have):
            plan.present.append((line, have))
            continue
        if have is None and line.module and has_module(line.module):
            plan.present.append((line, f"module {line.module}"))
            continue
        found = wheels.get(line.name, [])
        ok = sorted(((v, p) for v, p, t in found if _fits(line.req, str(v)) and t & tags), reverse=True)
        if ok:
            plan.install.append((line, ok[0][1]))
            continue
        why = ("installed " + have + ", not " + str(line.req.specifier)) if have else "not installed"
        why += (f"; no wheel in {folder} fits this interpreter ({plan.tag})" if found else
                f"; no {line.name} wheel in {folder}")
        if found:
            why += ": it has " + ", ".join(os.path.basename(p) for _, p, _ in found)
        (plan.skipped if line.optional else plan.missing).append((line, why))
    return plan


def wanted_wheel(line: Line, tag: Optional[str] = None) -> str:
    """The file name of a wheel that would satisfy ``line`` on the interpreter of ``tag`` (default: this one)."""
    stem = line.name.replace("-", "_")
    spec = str(line.req.specifier) or "any version"
    tag = tag or str(next(iter(sys_tags())))
    return f"{stem}-<{spec}>-{tag}.whl (or {stem}-<{spec}>-py3-none-any.whl)"


def find_wheels(search=None, root: str = ROOT, name: str = "") -> str | None:
    """The wheels folder: ``$EEDI_WHEELS``; else the first match of ``search`` (a folder, or glob(s)
    of ``requirements.txt``) with ``*.whl`` beside it; else (no ``search``) the folder under
    ``root`` holding ``*.whl`` and a ``requirements.txt`` whose path contains ``name`` (the wheels
    dataset's slug; any such folder when none does). None: no wheels folder attached."""
    env = os.environ.get("EEDI_WHEELS")
    if env:
        if not os.path.isfile(os.path.join(env, "requirements.txt")):
            raise FileNotFoundError(f"EEDI_WHEELS={env}: no requirements.txt there (build it with tools/build_wheels.sh)")
        return env
    if search is None:                          # either /kaggle/input layout
        for want in ([name, ""] if name else [""]):
            hits = [f for f in candidates(want, "*.whl", root) if os.path.isfile(os.path.join(f, "requirements.txt"))]
            if hits:
                if len(hits) > 1:
                    print(f"offline install: {len(hits)} wheels folders under {root}: {', '.join(hits)}; "
                          f"using {hits[0]}", flush=True)
                return hits[0]
        return None
    if os.path.isdir(str(search)):              # a folder given directly
        search = os.path.join(search, "requirements.txt")
    for pattern in ([search] if isinstance(search, str) else search):
        for req in sorted(glob.glob(pattern)):
            folder = os.path.dirname(req)
            if glob.glob(os.path.join(folder, "*.whl")):
                return folder
    return None


def install_command(folder: str, wheels: list[str], constraints: Optional[str] = None) -> list[str]:
    cmd = [sys.executable, "-m", "pip", "install", "-q", "--no-index", "--find-links", folder]
    if constraints:
        cmd += ["-c", constraints]
    return cmd + list(wheels)


def _constraints(installed, upgrading=()) -> Optional[str]:
    pins = [f"{n}=={v}" for n in PINNED if n not in upgrading and (v := installed(n))]
    if not pins:
        return None
    fd, path = tempfile.mkstemp(prefix="eedi_pins_", suffix=".txt")
    with os.fdopen(fd, "w") as f:
        f.write("\n".join(pins) + "\n")
    return path


def _pip_failure(folder: str, output: str, tag: str) -> str:
    hit = re.search(r"(?:No matching distribution found for|Could not find a version that satisfies the "
                    r"requirement) ([^\s(]+)", output)
    if hit:
        req = _Req(hit.group(1))
        return (f"offline install: pip needs {hit.group(1)}, which neither the image nor {folder} has; add "
                f"{wanted_wheel(Line(str(req), canonicalize_name(req.name), req), tag)} to the folder; {BUILD_HINT}")
    tail = "\n".join(output.strip().splitlines()[-15:])
    return f"offline install from {folder} failed:\n{tail}"


def _optional_failure(output: str) -> str:
    """One line for an optional wheel pip could not install."""
    hit = re.search(r"No matching distribution found for ([^\s(]+)", output)
    if hit:
        return f"pip needs {hit.group(1)}, which neither the image nor the folder has"
    lines = [ln.strip() for ln in output.strip().splitlines() if ln.strip()]
    return "pip failed: " + (lines[-1] if lines else "no output")


def install_wheels(search=None, marker: str = DONE_MARKER, run=subprocess.run,
                   installed: Callable[[str], Optional[str]] = installed_version, tags=None,
                   has_module: Callable[[str], bool] = None) -> list[list[str]] | None:
    """Install what the image lacks from an attached wheels folder, once per machine session;
    return the pip commands run (None: no folder, done before, or nothing lacking): one for the
    required wheels, then one for each optional wheel on its own, whose failure is one warning line.

    ``search``: a wheels folder or glob(s) of ``requirements.txt`` (None: :func:`find_wheels`'s
    search of ``/kaggle/input``). RuntimeError, before pip runs,
    when a required package is neither installed nor in the folder for this interpreter.
    """
    folder = find_wheels(search)
    if folder is None or os.path.exists(marker):
        return None
    plan = plan_install(folder, installed=installed, tags=tags, has_module=has_module)
    for line, why in plan.skipped:
        print(f"offline install: {line.text} skipped (optional): {why}", flush=True)
    if plan.missing:
        lines = [f"  {line.text}: {why}; wanted: {wanted_wheel(line, plan.tag)}" for line, why in plan.missing]
        raise RuntimeError(f"offline install: {len(plan.missing)} required package(s) cannot be installed "
                           f"({plan.tag}):\n" + "\n".join(lines) + f"\n{BUILD_HINT}")
    cmds = []
    if plan.install:
        constraints = _constraints(installed, {line.name for line, _ in plan.install})
        required = [w for line, w in plan.install if not line.optional]
        if required:
            cmd = install_command(folder, required, constraints)
            print(f"offline install ({len(plan.present)} already in the image): " + " ".join(cmd), flush=True)
            cmds.append(cmd)
            res = run(cmd, capture_output=True, text=True)
            if res.returncode != 0:
                raise RuntimeError(_pip_failure(folder, (res.stdout or "") + (res.stderr or ""), plan.tag))
        for line, wheel in plan.install:      # each optional one alone: its failure costs only itself
            if not line.optional:
                continue
            cmd = install_command(folder, [wheel], constraints)
            print("offline install (optional): " + " ".join(cmd), flush=True)
            cmds.append(cmd)
            res = run(cmd, capture_output=True, text=True)
            if res.returncode != 0:
                print(f"offline install: {line.text} not installed (optional): "
                      f"{_optional_failure((res.stdout or '') + (res.stderr or ''))}", flush=True)
    else:
        print(f"offline install: the image has all {len(plan.present)} packages of {folder}/requirements.txt",
              flush=True)
    open(marker, "w").close()
    return cmds or None
