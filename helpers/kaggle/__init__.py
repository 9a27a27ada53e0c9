"""Kaggle only: installing an attached wheels dataset (offline_install) and GPU memory estimates (memory_plan).
"""
