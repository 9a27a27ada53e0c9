"""Old name of :mod:`helpers.mine.hn_mine`, kept for one release so that ``python -m helpers.hn_mine``
and ``from helpers.hn_mine import ...`` still work. New code: ``helpers.mine.hn_mine``."""
import runpy as _runpy

if __name__ == "__main__":
    _runpy.run_module("helpers.mine.hn_mine", run_name="__main__", alter_sys=True)
else:
    from helpers.mine.hn_mine import *  # noqa: F401,F403
