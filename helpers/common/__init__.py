"""Shared plumbing every stage uses: command-line entry point and dataclass parsing (cli), JSONL with
file:line errors and atomic writes (io_utils), devices and dtype by hardware (devices), offline model
aliases (models), default prompts (prompts), notebook Args from the parameters cell (notebook).
"""
