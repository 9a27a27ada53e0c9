"""Kaggle only: installing an attached wheels dataset (offline_install), Kaggle detection (env),
finding an attached dataset or Kaggle Model in either /kaggle/input layout (inputs). The GPU memory
plan every stage checks is :mod:`helpers.common.memory`.
"""
