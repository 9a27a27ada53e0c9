"""Kaggle only: installing an attached wheels dataset (offline_install), GPU memory and time estimates
and the check every GPU stage runs before loading a model (memory_plan), Kaggle detection (env),
finding an attached dataset or Kaggle Model in either /kaggle/input layout (inputs).
"""
