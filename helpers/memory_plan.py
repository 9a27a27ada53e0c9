"""Old name of :mod:`helpers.kaggle.memory_plan`, kept for one release so that ``python -m helpers.memory_plan``
and ``from helpers.memory_plan import ...`` still work. New code: ``helpers.kaggle.memory_plan``."""
import runpy as _runpy

if __name__ == "__main__":
    _runpy.run_module("helpers.kaggle.memory_plan", run_name="__main__", alter_sys=True)
else:
    from helpers.kaggle.memory_plan import *  # noqa: F401,F403
