"""Old name of :mod:`helpers.train.kd_finetune`, kept for one release so that ``python -m helpers.kd_finetune``
and ``from helpers.kd_finetune import ...`` still work. New code: ``helpers.train.kd_finetune``."""
import runpy as _runpy

if __name__ == "__main__":
    _runpy.run_module("helpers.train.kd_finetune", run_name="__main__", alter_sys=True)
else:
    from helpers.train.kd_finetune import *  # noqa: F401,F403
