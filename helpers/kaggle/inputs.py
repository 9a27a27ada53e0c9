"""Find an attached dataset or Kaggle Model under ``/kaggle/input`` without hard-coding a layout.

Kaggle mounts the same upload at different paths depending on the runtime:

- datasets: ``/kaggle/input/<slug>`` or, on newer runtimes, ``/kaggle/input/datasets/<owner>/<slug>``;
- Kaggle Models: ``/kaggle/input/<model>/<framework>/<variation>/<version>`` (the documented
  layout) or ``/kaggle/input/models/<owner>/<model>/<framework>/<variation>/<version>``, with the
  framework spelled ``transformers`` or ``Transformers``.

:func:`find_input` searches for a folder holding ``marker`` (``config.json`` for a Hugging Face
model folder) whose path contains ``name`` (a slug such as ``bge-en-icl``, or several parts such as
``bge-en-icl/transformers/default``), case-insensitively. When several versions of one model are
attached, the highest version wins; any other ambiguity is an error that lists the candidates.

    python -m helpers.kaggle.inputs bge-en-icl          # prints the folder, for --var embedder=...
"""
from __future__ import annotations

import fnmatch
import os

ROOT = "/kaggle/input"
MAX_DEPTH = 8          # models/<owner>/<model>/<framework>/<variation>/<version>/<subfolder>...
# what a profile's /kaggle/input var names: a model folder, an adapter folder, the competition data
INPUT_MARKERS = ("config.json", "adapter_config.json", "test.csv", "train.csv")


def _parts(path: str) -> list[str]:
    return [p for p in path.replace("\\", "/").split("/") if p]


def _contains(parts: list[str], want: list[str]) -> bool:
    low, want = [p.lower() for p in parts], [w.lower() for w in want]
    return any(low[i:i + len(want)] == want for i in range(len(low) - len(want) + 1))


def _holds(files, marker) -> bool:
    """``marker``: a file name or glob (``*.whl``), several (any one), or None (any folder)."""
    if marker is None:
        return True
    return any(fnmatch.filter(files, m) for m in ([marker] if isinstance(marker, str) else marker))


def candidates(name: str, marker="config.json", root: str = ROOT) -> list[str]:
    """Every folder under ``root`` (to :data:`MAX_DEPTH`) holding ``marker`` (a name, a glob such
    as ``*.whl``, a tuple of them: any one; None: the folder itself) whose path below ``root``
    contains the parts of ``name`` in order."""
    want = _parts(name)
    out = []
    root = os.path.abspath(root)
    for folder, dirs, files in os.walk(root):
        rel = _parts(os.path.relpath(folder, root)) if folder != root else []
        if len(rel) >= MAX_DEPTH:
            dirs[:] = []
        dirs.sort()
        if _holds(files, marker) and _contains(rel, want):
            out.append(folder)
            dirs[:] = []                       # a model folder's own subfolders are not other models
    return out


def _version_key(path: str):
    last = _parts(path)[-1]
    return (0, int(last)) if last.isdigit() else (-1, 0)


def find_input(name: str, marker="config.json", root: str = ROOT) -> str:
    """The folder for ``name`` (see the module docstring). An existing path is returned as it is.

    FileNotFoundError when nothing matches (the message lists what is attached); ValueError when
    several folders match and they are not versions of one model."""
    if os.path.isdir(name):
        return name
    hits = candidates(name, marker, root)
    if len(hits) == 1:
        return hits[0]
    if not hits:
        attached = sorted(os.listdir(root)) if os.path.isdir(root) else []
        raise FileNotFoundError(
            f"no folder with {marker} for {name!r} under {root} (searched /kaggle/input/<slug>, "
            f".../datasets/<owner>/<slug> and .../models/<owner>/<model>/<framework>/<variation>/<version>); "
            f"attached: {', '.join(attached) or 'nothing'}: add it to dataset_sources / model_sources")
    parents = {os.path.dirname(h) for h in hits}
    if len(parents) == 1 and all(_version_key(h)[0] == 0 for h in hits):
        return max(hits, key=_version_key)            # versions 1, 2, 3 of one model: the newest
    raise ValueError(f"{len(hits)} folders with {marker} match {name!r}: {', '.join(hits)}; "
                     "give more of the path (e.g. owner/model/framework/variation)")


def resolve_input(path: str, marker=INPUT_MARKERS, root: str = ROOT) -> str:
    """A path as a profile or an entry script writes it, ``/kaggle/input/<slug>[/<subfolder>...]``,
    -> the folder this runtime mounted (either layout; :func:`find_input` with the parts after
    ``/kaggle/input``). An existing path, or one outside ``/kaggle/input``, is returned as it is."""
    p = str(path).replace("\\", "/").rstrip("/")
    if os.path.isdir(p) or not p.startswith(ROOT + "/"):
        return str(path)
    return find_input(p[len(ROOT) + 1:], marker, root)


def resolve_vars(values: dict, marker=INPUT_MARKERS, root: str = ROOT) -> dict:
    """The entries of ``values`` (a profile's ``vars``) that name a ``/kaggle/input`` folder,
    resolved by :func:`resolve_input`; one printed line for each. One that is not attached (a base
    model only an adapter needs) or is ambiguous is left out, with a line saying why."""
    out = {}
    for key, value in values.items():
        if not (isinstance(value, str) and value.startswith(ROOT + "/")):
            continue
        try:
            out[key] = resolve_input(value, marker, root)
            print(f"input {key}: {out[key]}", flush=True)
        except FileNotFoundError:
            print(f"input {key}: {value} is not attached (no folder with {' or '.join(_as_tuple(marker))} "
                  f"under {root} whose path contains {value[len(ROOT) + 1:]}); left as written", flush=True)
        except ValueError as e:
            print(f"input {key}: {e}; left as written", flush=True)
    return out


def kernel_command(work: str, profile: str, overrides: dict, wheels_slug: str, root: str = ROOT,
                   install=None) -> list[str]:
    """What a Kaggle entry script (``kaggle/run_all_kaggle.py``, ``kaggle/submit/submit_kaggle.py``)
    does once it has copied the code dataset to ``work``: install the wheels dataset offline (the
    folder holding ``*.whl``, not the code's ``requirements.txt``; only what the image lacks), read
    the profile's vars with ``overrides`` over them, resolve each /kaggle/input path in either mount
    layout -> the ``run_all.py`` command (to run in ``work``)."""
    import sys

    import yaml
    from helpers.kaggle.offline_install import find_wheels, install_wheels
    wheels = find_wheels(root=root, name=wheels_slug)
    if wheels:              # a missing required wheel stops here, naming it (optional ones: one line each)
        (install or install_wheels)(wheels)
    with open(os.path.join(work, "configs", profile + ".yaml"), encoding="utf-8") as f:
        values = {**(yaml.safe_load(f).get("vars") or {}), **overrides}
    cmd = [sys.executable, "run_all.py", "--profile", profile]
    for key, path in resolve_vars(values, root=root).items():   # an unattached optional input: left out
        cmd += ["--var", f"{key}={path}"]
    return cmd


def _as_tuple(marker) -> tuple:
    return (marker,) if isinstance(marker, str) else tuple(marker or ("any file",))


def main(argv=None) -> None:
    """Print the folder; bad input (nothing or several match) raises for helpers.common.cli.run."""
    import argparse
    p = argparse.ArgumentParser(prog="python -m helpers.kaggle.inputs", description=__doc__.split("\n")[0])
    p.add_argument("name", help="slug or path parts, e.g. bge-en-icl or bge-en-icl/transformers/default")
    p.add_argument("--marker", default="config.json", help="a file the folder holds (default: config.json)")
    p.add_argument("--root", default=ROOT, help=f"where to search (default: {ROOT})")
    a = p.parse_args(argv)
    print(find_input(a.name, a.marker, a.root))


if __name__ == "__main__":
    from helpers.common.cli import run
    run(main)
