"""Old name of :mod:`helpers.demo.generate`, kept for one release so that ``python -m helpers.demo_data``
and ``from helpers.demo_data import ...`` still work. New code: ``helpers.demo.generate``."""
import runpy as _runpy

if __name__ == "__main__":
    _runpy.run_module("helpers.demo.generate", run_name="__main__", alter_sys=True)
else:
    from helpers.demo.generate import *  # noqa: F401,F403
