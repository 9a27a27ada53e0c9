"""Old name of :mod:`helpers.eval.submission`, kept for one release so that ``python -m helpers.submission``
and ``from helpers.submission import ...`` still work. New code: ``helpers.eval.submission``."""
import runpy as _runpy

if __name__ == "__main__":
    _runpy.run_module("helpers.eval.submission", run_name="__main__", alter_sys=True)
else:
    from helpers.eval.submission import *  # noqa: F401,F403
