"""What a notebook calls first: ``from helpers.notebook import setup; setup()``.

The notebooks layer: the notebooks import this module, nothing in the stage packages does. Each
notebook's first code cell is::

    try:
        from helpers.notebook import setup                 # `make setup` installed the package (pip install -e .)
    except ModuleNotFoundError:                            # not installed: the checkout above, or Kaggle's copy
        ...
    ROOT = setup()

:func:`setup` makes the project root the working folder (the relative paths of every parameters
cell and profile are relative to it) and, on Kaggle, installs the attached wheels offline
(:func:`helpers.kaggle.offline_install.install_wheels`; elsewhere nothing is installed). It imports
neither torch nor transformers, so the wheels go in before either is loaded. :func:`args_from` and
:func:`field_values` (build a stage's arguments from the parameters cell by field name) are
re-exported for the cells that follow.
"""
from __future__ import annotations

import os
import sys
from pathlib import Path

import helpers
from helpers.common.notebook import args_from, field_values   # noqa: F401  (re-exported for the notebooks)
from helpers.kaggle.offline_install import install_wheels

__all__ = ["setup", "project_root", "args_from", "field_values"]
KAGGLE_CODE = Path("/kaggle/working/code")    # where kaggle/run_all_kaggle.py copies the code dataset


def is_checkout(path: Path) -> bool:
    """A project folder: the helpers package and the notebooks side by side."""
    return (path / "helpers" / "__init__.py").is_file() and (path / "notebooks").is_dir()


def checkout_around(cwd: Path) -> Path | None:
    """The first project folder among ``cwd`` and its parents, else Kaggle's copy, else None."""
    return next((p for p in [cwd, *cwd.parents, KAGGLE_CODE] if is_checkout(p)), None)


def project_root(cwd: Path | None = None) -> Path:
    """The checkout this notebook belongs to, which must be the one ``import helpers`` found.

    Two checkouts with one installed (``pip install -e`` of the other) would run the other's code
    under this one's notebooks: refused, with the two paths named.
    """
    cwd = Path.cwd() if cwd is None else Path(cwd)
    imported = Path(helpers.__file__).resolve().parent.parent
    here = checkout_around(cwd.resolve())
    if here is not None and is_checkout(imported) and here.resolve() != imported:
        raise RuntimeError(f"this notebook runs in the checkout {here}, but `import helpers` found {imported} "
                           f"(an editable install of another checkout): run `pip install -e {here}` "
                           f"or start Jupyter from {here}")
    root = imported if is_checkout(imported) else here
    if root is None:
        raise RuntimeError("cannot find the project folder (helpers/ beside notebooks/): open the notebook from "
                           "its notebooks/ folder, or on Kaggle copy the code dataset to /kaggle/working/code")
    return root


def setup(install: bool = True) -> Path:
    """Work from the project root (also first on ``sys.path``, for kernels started elsewhere) and,
    with ``install``, install the attached wheels on Kaggle. Returns the root."""
    root = project_root()
    os.chdir(root)
    if str(root) not in sys.path:
        sys.path.insert(0, str(root))
    if install:
        install_wheels()
    return root
