"""Old name of :mod:`helpers.data.prepare_data`, kept for one release so that ``python -m helpers.prepare_data``
and ``from helpers.prepare_data import ...`` still work. New code: ``helpers.data.prepare_data``."""
import runpy as _runpy

if __name__ == "__main__":
    _runpy.run_module("helpers.data.prepare_data", run_name="__main__", alter_sys=True)
else:
    from helpers.data.prepare_data import *  # noqa: F401,F403
