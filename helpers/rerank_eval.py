"""Old name of :mod:`helpers.eval.rerank_eval`, kept for one release so that ``python -m helpers.rerank_eval``
and ``from helpers.rerank_eval import ...`` still work. New code: ``helpers.eval.rerank_eval``."""
import runpy as _runpy

if __name__ == "__main__":
    _runpy.run_module("helpers.eval.rerank_eval", run_name="__main__", alter_sys=True)
else:
    from helpers.eval.rerank_eval import *  # noqa: F401,F403
