"""Where we run: Kaggle sets ``KAGGLE_KERNEL_RUN_TYPE`` ("Interactive" or "Batch") in its notebooks."""
from __future__ import annotations

import os


def on_kaggle() -> bool:
    return bool(os.environ.get("KAGGLE_KERNEL_RUN_TYPE"))
