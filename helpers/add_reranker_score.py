"""Old name of :mod:`helpers.rerank.add_reranker_score`, kept for one release so that ``python -m helpers.add_reranker_score``
and ``from helpers.add_reranker_score import ...`` still work. New code: ``helpers.rerank.add_reranker_score``."""
import runpy as _runpy

if __name__ == "__main__":
    _runpy.run_module("helpers.rerank.add_reranker_score", run_name="__main__", alter_sys=True)
else:
    from helpers.rerank.add_reranker_score import *  # noqa: F401,F403
