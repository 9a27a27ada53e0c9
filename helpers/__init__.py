"""Helpers for the Eedi reranker-to-embedder distillation notebooks.

Each module is one concern:
  io_utils       JSONL reading/writing with file:line errors, atomic writes
  models         offline model aliases (demo:...) -> local Hugging Face folders
  devices        device and dtype choice by hardware
  data           Eedi CSV loading, query formatting, splits (00_prepare_data)
  demo_data      generator of the bundled demo dataset
"""
__version__ = "0.1.0"
