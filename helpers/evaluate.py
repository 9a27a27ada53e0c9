"""Old name of :mod:`helpers.eval.evaluate`, kept for one release so that ``python -m helpers.evaluate``
and ``from helpers.evaluate import ...`` still work. New code: ``helpers.eval.evaluate``."""
import runpy as _runpy

if __name__ == "__main__":
    _runpy.run_module("helpers.eval.evaluate", run_name="__main__", alter_sys=True)
else:
    from helpers.eval.evaluate import *  # noqa: F401,F403
