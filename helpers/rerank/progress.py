"""Resumable progress for a long scoring run: a sidecar JSONL beside the output file.

Line 1 is a header (input hash, settings, chunk size); every further line is one finished chunk
of queries, written whole, flushed and fsynced. Chunks are fixed slices of the input
(``[i * chunk_size, (i + 1) * chunk_size)``), so a chunk's batches, and therefore its scores, are
the same whether or not the run was interrupted before it: a resumed run yields the same bytes.
A line cut short by a kill is dropped on the next start. A header that does not match the
current input and settings makes the run refuse (or start afresh when told to overwrite);
matching progress is always resumed.
"""
from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

from helpers.common.io_utils import atomic_path

FORMAT = "rerank-progress/1"


def file_sha256(path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def progress_path(output_file) -> Path:
    p = Path(output_file)
    return p.with_name(p.name + ".progress.jsonl")


class Progress:
    """Finished chunks of one run: ``done[i] = payload`` for chunk ``i``."""

    def __init__(self, path, header: dict, overwrite: bool = False):
        self.path = Path(path)
        self.header = dict(header, format=FORMAT)
        self.done: dict[int, dict] = {}
        if self.path.exists():
            try:
                self._load()
                return
            except ValueError:
                if not overwrite:
                    raise
                self.path.unlink()                # stale progress of other input/settings
        if not self.path.exists():      # the header whole or not at all (io_utils' write rule)
            with atomic_path(self.path) as tmp:
                tmp.write_text(json.dumps(self.header, sort_keys=True) + "\n", encoding="utf-8")

    def _load(self):
        good_end = 0
        with open(self.path, "rb") as f:
            data = f.read()
        lines = data.split(b"\n")
        try:
            old = json.loads(lines[0])
        except (json.JSONDecodeError, UnicodeDecodeError):
            old = None
        if old != self.header:
            diff = "unreadable header" if not isinstance(old, dict) else ", ".join(
                k for k in sorted(set(old) | set(self.header)) if old.get(k) != self.header.get(k))
            raise ValueError(
                f"{self.path}: progress of an earlier run with a different input or settings "
                f"({diff}); rerun with --overwrite True to discard it, or restore the old input/settings")
        good_end = len(lines[0]) + 1
        for raw in lines[1:-1]:           # the last piece has no newline: cut short or empty
            try:
                rec = json.loads(raw)
                self.done[int(rec["chunk"])] = rec
            except (json.JSONDecodeError, KeyError, TypeError, ValueError):
                break
            good_end += len(raw) + 1
        if good_end != len(data):         # drop a line a kill cut short, before appending
            with open(self.path, "r+b") as f:
                f.truncate(good_end)

    def add(self, chunk: int, payload: dict) -> None:
        rec = dict(payload, chunk=chunk)
        with open(self.path, "a", encoding="utf-8") as f:
            f.write(json.dumps(rec, allow_nan=False) + "\n")
            f.flush()
            os.fsync(f.fileno())
        self.done[chunk] = rec

    def remove(self) -> None:
        if self.path.exists():
            self.path.unlink()
