"""Old name of :mod:`helpers.train.train_reranker`, kept for one release so that ``python -m helpers.train_reranker``
and ``from helpers.train_reranker import ...`` still work. New code: ``helpers.train.train_reranker``."""
import runpy as _runpy

if __name__ == "__main__":
    _runpy.run_module("helpers.train.train_reranker", run_name="__main__", alter_sys=True)
else:
    from helpers.train.train_reranker import *  # noqa: F401,F403
