"""JSONL input and output: clear errors (file, line, field) and atomic writes.

Every stage reads with :func:`read_jsonl` and writes with :func:`write_jsonl` /
:func:`atomic_path`, so a bad line names its file and line, and a killed run never leaves a
half-written file that looks whole.
"""
from __future__ import annotations

import contextlib
import glob
import json
import math
import os
import shutil
import tempfile
from pathlib import Path
from typing import Callable, Iterable, Iterator


class InputError(ValueError):
    """Bad input: the message names the file, the line (1-based) and the field."""

    def __init__(self, path, line, field, problem):
        self.path, self.line, self.field = str(path), line, field
        where = f"{path}" + (f", line {line}" if line is not None else "")
        what = f", field {field!r}" if field else ""
        super().__init__(f"{where}{what}: {problem}")


def read_jsonl(path) -> list[dict]:
    """Read a JSONL file; every line must be one JSON object. Blank lines are skipped."""
    path = Path(path)
    if not path.exists():
        raise InputError(path, None, None, "file does not exist")
    rows = []
    with open(path, "rb") as f:           # bytes, so a bad byte is named by its line and column
        for i, raw in enumerate(f, 1):
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError as e:
                raise InputError(path, i, None, f"not UTF-8 (byte 0x{raw[e.start]:02x} at column "
                                                f"{len(raw[:e.start].decode('utf-8')) + 1})") from None
            if not line.strip():
                continue
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as e:
                raise InputError(path, i, None, f"not valid JSON ({e.msg} at column {e.colno})") from None
            if not isinstance(obj, dict):
                raise InputError(path, i, None, f"expected a JSON object, got {type(obj).__name__}")
            obj["__line__"] = i
            rows.append(obj)
    if not rows:
        raise InputError(path, None, None, "file is empty")
    return rows


def strip_line(row: dict) -> dict:
    return {k: v for k, v in row.items() if k != "__line__"}


def dumps(row: dict) -> str:
    return json.dumps(strip_line(row), ensure_ascii=False, allow_nan=False)


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def fsync_file(path) -> None:
    """Flush a written file's contents to disk."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def fsync_dir(folder) -> None:
    """Make a rename, creation or removal in ``folder`` durable (a no-op where folders cannot be opened)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def remove_durably(path) -> None:
    """Remove ``path`` (if there) and make the removal durable before anything else is written:
    for a completeness marker that must be gone before the files it vouches for change."""
    path = Path(path)
    if path.exists() or path.is_symlink():
        path.unlink()
        fsync_dir(path.parent)


@contextlib.contextmanager
def atomic_path(path) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; on success rename it onto ``path``.

    The one write rule: temporary file beside the target, fsync it, rename it onto the target,
    fsync the folder (so that after a crash or power loss the target is the old file or the whole
    new one, and the rename itself is not lost). On an exception the temporary file is removed and
    ``path`` is left as it was.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    for stale in path.parent.glob(f".{glob.escape(path.name)}.*.tmp"):   # left by a killed run
        stale.unlink(missing_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp = Path(tmp)
    os.chmod(tmp, 0o666 & ~_umask())          # mkstemp makes 0600; give the usual permissions
    try:
        yield tmp
        fsync_file(tmp)
        os.replace(tmp, path)
        fsync_dir(path.parent)
    finally:
        if tmp.exists():
            tmp.unlink()


def save_dir_atomic(path: Path, save: Callable[[Path], None]) -> None:
    """The folder version of :func:`atomic_path`: ``save(tmp)`` into a hidden folder of its own beside
    ``path`` (a unique name: two saves never share one), then rename it onto ``path``. An old folder
    is first renamed aside and removed after: a kill at any point leaves ``path`` the old folder
    whole, the new one whole, or (between the two renames) absent with the old one beside it."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    shutil.rmtree(path.with_name(f".{path.name}.tmp"), ignore_errors=True)     # the fixed name of old versions
    for stale in path.parent.glob(f".{glob.escape(path.name)}.pid*.tmp"):       # left by a killed save
        if not _alive(stale.name[len(path.name) + 5:].split(".", 1)[0]):
            shutil.rmtree(stale, ignore_errors=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.pid{os.getpid()}.", suffix=".tmp", dir=path.parent))
    os.chmod(tmp, 0o777 & ~_umask())
    try:
        save(tmp)
        remove_dir_atomic(path)
        os.replace(tmp, path)
        fsync_dir(path.parent)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _alive(pid: str) -> bool:
    """Whether process ``pid`` (digits) runs on this machine (another save's folder is left alone)."""
    if not pid.isdigit():
        return False
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


@contextlib.contextmanager
def exclusive_lock(target, what: str) -> Iterator[None]:
    """Hold an exclusive lock on ``target`` (a file or folder a stage writes) for the block: a hidden
    ``.<name>.lock`` beside it (beside, so that removing ``target`` whole keeps it). A second writer,
    by hand or left running by a killed ``run_all.py`` (torchrun workers), makes one ValueError here
    instead of two runs writing one folder."""
    import fcntl
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    lock = target.with_name(f".{target.name}.lock")
    fd = os.open(lock, os.O_RDONLY | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        raise ValueError(f"{what}: another process is writing {target} (it holds {lock}); wait for it to end "
                         f"(`fuser {lock}` names it: a killed run_all.py can leave training workers behind)") from None
    try:
        yield
    finally:                # removed while still held: a failed stage leaves no file behind
        lock.unlink(missing_ok=True)
        os.close(fd)


def remove_dir_atomic(path) -> None:
    """Remove the folder ``path`` (if there) as one step: renamed aside (a hidden name of its own),
    then deleted, so nothing ever sees it half deleted."""
    path = Path(path)
    if not path.exists():
        return
    aside = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".old", dir=path.parent))
    os.replace(path, aside / path.name)
    fsync_dir(path.parent)
    shutil.rmtree(aside, ignore_errors=True)


def write_jsonl(path, rows: Iterable[dict]) -> None:
    with atomic_path(path) as tmp:
        with open(tmp, "w", encoding="utf-8") as f:
            for r in rows:
                f.write(dumps(r) + "\n")


def write_json(path, obj, indent=2) -> None:
    """``obj`` as JSON into ``path`` by :func:`atomic_path`'s rule (temp file, fsync, rename, fsync dir)."""
    with atomic_path(path) as tmp:
        with open(tmp, "w", encoding="utf-8") as f:
            json.dump(obj, f, ensure_ascii=False, indent=indent, allow_nan=False)
            f.write("\n")


def check_writable(path) -> None:
    """Fail early (before hours of work) when the output folder cannot be written."""
    parent = Path(path).parent
    try:
        parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=parent)
        os.close(fd)
        os.unlink(tmp)
    except OSError as e:
        raise InputError(path, None, None, f"output path is not writable ({e.strerror})") from None


class DiskSpaceError(OSError):
    """Not enough free disk for a large write (raised before writing anything)."""


def _gb(n: float) -> str:
    return f"{n / 1e9:.2f} GB"


def check_free_disk(folder, need_bytes: float, what: str) -> int:
    """Raise :class:`DiskSpaceError` unless ``folder`` (or its nearest existing parent) has
    ``need_bytes`` free (``shutil.disk_usage``); the message names the folder, what is written,
    the bytes needed and the bytes free. Returns the free bytes."""
    folder = Path(folder)
    probe = folder
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    free = shutil.disk_usage(probe).free
    if need_bytes > free:
        raise DiskSpaceError(
            f"not enough disk space in {folder} for {what}: it needs about {_gb(need_bytes)} "
            f"({int(need_bytes)} bytes) and {_gb(free)} ({free} bytes) are free. Free space (delete "
            f"old merged_model_* folders) or write elsewhere.")
    return free


def _need(row, path, field, kind):
    if field not in row:
        raise InputError(path, row.get("__line__"), field, "missing")
    v = row[field]
    if kind == "str" and not isinstance(v, str):
        raise InputError(path, row.get("__line__"), field, f"expected a string, got {type(v).__name__}")
    if kind == "strlist":
        if not isinstance(v, list) or not all(isinstance(x, str) for x in v):
            raise InputError(path, row.get("__line__"), field,
                             f"expected a list of strings, got {json.dumps(v)[:60]}")
    if kind == "floatlist":
        if not isinstance(v, list) or not all(isinstance(x, (int, float)) and not isinstance(x, bool) for x in v):
            raise InputError(path, row.get("__line__"), field, "expected a list of numbers")
        if not all(math.isfinite(x) for x in v):
            raise InputError(path, row.get("__line__"), field, "contains NaN or infinity")
    return v


def validate_queries(rows: list[dict], path, need_neg=False, need_scores=False, corpus_ids=None) -> None:
    """Check the query contract of DESIGN.md section 3 (ids, pos/neg aligned, scores finite)."""
    seen = set()
    for r in rows:
        line = r.get("__line__")
        qid = _need(r, path, "query_id", "str")
        if qid in seen:
            raise InputError(path, line, "query_id", f"duplicate query id {qid!r}")
        seen.add(qid)
        _need(r, path, "query", "str")
        pos = _need(r, path, "pos", "strlist")
        if not pos:
            raise InputError(path, line, "pos", "empty: every query needs at least one positive")
        pos_ids = _need(r, path, "pos_ids", "strlist")
        if len(pos_ids) != len(pos):
            raise InputError(path, line, "pos_ids", f"{len(pos_ids)} ids for {len(pos)} positives")
        dup = next((i for k, i in enumerate(pos_ids) if i in pos_ids[:k]), None)
        if dup is not None:             # metrics need each gold id once: found at the first epoch's end, not here
            raise InputError(path, line, "pos_ids", f"id {dup!r} given twice")
        fields = [("pos", "pos_ids")]
        if need_neg:
            neg = _need(r, path, "neg", "strlist")
            neg_ids = _need(r, path, "neg_ids", "strlist")
            if len(neg_ids) != len(neg):
                raise InputError(path, line, "neg_ids", f"{len(neg_ids)} ids for {len(neg)} negatives")
            fields.append(("neg", "neg_ids"))
        if need_scores:
            for texts, scores in (("pos", "pos_scores"), ("neg", "neg_scores")):
                s = _need(r, path, scores, "floatlist")
                if len(s) != len(r[texts]):
                    raise InputError(path, line, scores, f"{len(s)} scores for {len(r[texts])} {texts} texts")
        if corpus_ids is not None:
            for _, ids_field in fields:
                for pid in r[ids_field]:
                    if pid not in corpus_ids:
                        raise InputError(path, line, ids_field, f"id {pid!r} is not in the corpus")


def load_corpus(path) -> tuple[list[str], list[str]]:
    """Read corpus.jsonl -> (ids, texts); ids unique strings."""
    rows = read_jsonl(path)
    ids, texts, seen = [], [], set()
    for r in rows:
        i = _need(r, path, "id", "str")
        t = _need(r, path, "text", "str")
        if i in seen:
            raise InputError(path, r["__line__"], "id", f"duplicate corpus id {i!r}")
        seen.add(i)
        ids.append(i)
        texts.append(t)
    return ids, texts
