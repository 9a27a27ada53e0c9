"""helpers/kaggle/offline_install.py on fake wheels folders: pip and the installed packages are
mocked (nothing is installed). Kaggle's image is Python 3.12 with torch, transformers 5.x and
accelerate (facts gathered for issue 15: Colab/Kaggle GPU pip freeze, mid-2026)."""
import pytest
from packaging.tags import compatible_tags, cpython_tags

from helpers.kaggle import offline_install as oi

# what sys_tags() gives on a glibc 2.35 x86_64 machine (Kaggle's Ubuntu 22.04 base)
PLATFORMS = [f"manylinux_2_{m}_x86_64" for m in range(35, 16, -1)] + ["manylinux2014_x86_64", "linux_x86_64"]


def tags(minor):
    """The wheel tags of a CPython 3.<minor> on manylinux x86_64, most specific first."""
    return list(cpython_tags((3, minor), platforms=PLATFORMS)) + list(compatible_tags((3, minor), platforms=PLATFORMS))


KAGGLE = {"torch": "2.11.0+cu128", "transformers": "5.9.0", "accelerate": "1.13.0", "numpy": "2.0.2",
          "pyyaml": "6.0.2", "papermill": "2.6.0"}

REQS = """transformers>=4.56      # dtype=
peft>=0.13
accelerate>=0.34
bitsandbytes>=0.43
faiss-gpu-cu12          # optional import=faiss: exact torch search without it
papermill>=2.6
pyyaml
"""


def test_the_shipped_requirements_mark_faiss_and_gguf_optional(repo_root):
    lines = {ln.name: ln for ln in oi.read_requirements(str(repo_root / "requirements-kaggle.txt"))}
    assert lines["faiss-gpu-cu12"].optional and lines["faiss-gpu-cu12"].module == "faiss"
    assert lines["gguf"].optional and not lines["peft"].optional and not lines["bitsandbytes"].optional
    assert str(lines["transformers"].req.specifier) == ">=4.56"


def folder(tmp_path, wheels, reqs=REQS):
    w = tmp_path / "wheels"
    w.mkdir()
    (w / "requirements.txt").write_text(reqs)
    for name in wheels:
        (w / name).write_bytes(b"")
    return w


class Pip:
    def __init__(self, rc=0, out=""):
        self.calls, self.rc, self.out = [], rc, out

    def __call__(self, cmd, **kw):
        self.calls.append(cmd)
        import subprocess
        return subprocess.CompletedProcess(cmd, self.rc, stdout="", stderr=self.out)


def install(w, tmp_path, minor=12, installed=KAGGLE, pip=None, modules=()):
    return oi.install_wheels(str(w), str(tmp_path / "marker"), run=pip if pip is not None else Pip(),
                             installed=installed.get, tags=tags(minor), has_module=lambda m: m in modules)


PY312 = ["peft-0.14.0-py3-none-any.whl", "bitsandbytes-0.45.0-py3-none-manylinux_2_24_x86_64.whl",
         "faiss_gpu_cu12-1.10.0-cp312-cp312-manylinux_2_28_x86_64.whl",
         "faiss_gpu_cu12-1.10.0-cp311-cp311-manylinux_2_28_x86_64.whl"]


def test_on_python_312_only_what_the_image_lacks_is_installed(tmp_path, capsys):
    w = folder(tmp_path, PY312)
    pip = Pip()
    cmds = install(w, tmp_path, pip=pip)
    assert pip.calls == cmds and len(cmds) == 2                     # required, then optional faiss alone
    cmd = cmds[0]
    assert all(c[c.index("--find-links") + 1] == str(w) and "--no-index" in c for c in cmds)
    wheels = [sorted(x.rsplit("/", 1)[-1] for x in c if x.endswith(".whl")) for c in cmds]
    assert wheels == [["bitsandbytes-0.45.0-py3-none-manylinux_2_24_x86_64.whl", "peft-0.14.0-py3-none-any.whl"],
                      ["faiss_gpu_cu12-1.10.0-cp312-cp312-manylinux_2_28_x86_64.whl"]]
    pins = open(cmd[cmd.index("-c") + 1]).read().split()           # the image's torch cannot be replaced
    assert pins == ["torch==2.11.0+cu128", "transformers==5.9.0", "numpy==2.0.2"]
    assert "(4 already in the image)" in capsys.readouterr().out
    assert (tmp_path / "marker").exists() and install(w, tmp_path, pip=pip) is None   # once a session


def test_the_old_folder_built_for_310_311_only_names_what_312_needs(tmp_path):
    w = folder(tmp_path, ["bitsandbytes-0.45.0-py3-none-manylinux_2_24_x86_64.whl",
                          "peft-0.14.0-py3-none-any.whl",
                          "faiss_gpu_cu12-1.10.0-cp310-cp310-manylinux_2_28_x86_64.whl"],
               reqs=REQS + "fastdep>=1.0\n")
    (w / "fastdep-1.2-cp311-cp311-manylinux_2_17_x86_64.whl").write_bytes(b"")
    pip = Pip()
    with pytest.raises(RuntimeError) as e:
        install(w, tmp_path, pip=pip)
    msg = str(e.value)
    assert "1 required package(s) cannot be installed (cp312-cp312-manylinux_2_35_x86_64)" in msg
    assert "fastdep>=1.0: not installed; no wheel in" in msg and "it has fastdep-1.2-cp311-cp311" in msg
    assert "wanted: fastdep-<>=1.0>-cp312-cp312-manylinux_2_35_x86_64.whl" in msg and "--here" in msg
    assert "faiss" not in msg                                       # optional: not an error
    assert pip.calls == [] and not (tmp_path / "marker").exists()   # nothing ran, a retry is possible
    # on 3.11 the same folder is fine
    assert install(w, tmp_path, minor=11, pip=pip) is not None


def test_a_missing_optional_package_is_one_line_and_the_install_goes_on(tmp_path, capsys):
    w = folder(tmp_path, [n for n in PY312 if "cp312" not in n])     # faiss for 3.11 only
    pip = Pip()
    cmds = install(w, tmp_path, pip=pip)
    out = capsys.readouterr().out
    skipped = [ln for ln in out.splitlines() if "skipped" in ln]
    assert len(skipped) == 1 and "faiss-gpu-cu12 skipped (optional)" in skipped[0] and "cp311" in skipped[0]
    assert pip.calls == cmds and len(cmds) == 1
    assert not any("faiss" in c.rsplit("/", 1)[-1] for c in cmds[0] if c.endswith(".whl"))


def test_a_faiss_module_from_another_package_counts(tmp_path, capsys):
    w = folder(tmp_path, PY312)
    cmds = install(w, tmp_path, modules={"faiss"})                  # e.g. faiss-cpu in the image
    assert len(cmds) == 1 and not any("faiss" in c.rsplit("/", 1)[-1] for c in cmds[0] if c.endswith(".whl"))


def test_nothing_lacking_runs_no_pip(tmp_path, capsys):
    w = folder(tmp_path, PY312)
    pip = Pip()
    have = dict(KAGGLE, peft="0.19.1", bitsandbytes="0.45.0", **{"faiss-gpu-cu12": "1.10.0"})
    assert install(w, tmp_path, installed=have, pip=pip) is None and pip.calls == []
    assert "the image has all 7 packages" in capsys.readouterr().out


def test_too_old_a_transformers_is_upgraded_and_not_pinned(tmp_path):
    w = folder(tmp_path, PY312 + ["transformers-5.9.0-py3-none-any.whl"])
    cmd = install(w, tmp_path, installed=dict(KAGGLE, transformers="4.51.0"))[0]
    assert any(c.endswith("transformers-5.9.0-py3-none-any.whl") for c in cmd)
    assert "transformers" not in open(cmd[cmd.index("-c") + 1]).read()


def test_a_pip_failure_names_the_missing_dependency_and_its_wheel(tmp_path):
    w = folder(tmp_path, PY312)
    pip = Pip(rc=1, out="ERROR: Could not find a version that satisfies the requirement tenacity>=5.0.2 "
                        "(from papermill) (from versions: none)\nERROR: No matching distribution found for tenacity>=5.0.2\n")
    with pytest.raises(RuntimeError, match=r"pip needs tenacity>=5.0.2, which neither the image nor .* has; add "
                                           r"tenacity-<>=5.0.2>-cp312-cp312-manylinux_2_35_x86_64.whl"):
        install(w, tmp_path, pip=pip)
    assert not (tmp_path / "marker").exists()


def test_the_wheels_folder_is_found_in_both_kaggle_input_layouts(tmp_path, monkeypatch):
    monkeypatch.delenv("EEDI_WHEELS", raising=False)
    new = tmp_path / "datasets" / "me" / "eedi-distill-wheels"      # /kaggle/input/datasets/<owner>/<slug>
    new.mkdir(parents=True)
    (new / "requirements.txt").write_text("peft\n")
    (new / "peft-0.14.0-py3-none-any.whl").write_bytes(b"")
    (tmp_path / "code").mkdir()
    (tmp_path / "code" / "requirements.txt").write_text("peft\n")    # the code dataset: no wheels
    assert oi.find_wheels(root=str(tmp_path)) == str(new)
    old = tmp_path / "my-wheels"                                      # /kaggle/input/<slug>, both attached
    old.mkdir()
    (old / "requirements.txt").write_text("peft\n")
    (old / "peft-0.14.0-py3-none-any.whl").write_bytes(b"")
    assert oi.find_wheels(root=str(tmp_path), name="my-wheels") == str(old)      # the slug wins
    assert oi.find_wheels(root=str(tmp_path), name="eedi-distill-wheels") == str(new)


class DepsPip(Pip):
    """pip that fails any call holding a faiss wheel: its CUDA runtime dependencies are not in the folder."""
    def __call__(self, cmd, **kw):
        import subprocess
        self.calls.append(cmd)
        if any("faiss" in c.rsplit("/", 1)[-1] for c in cmd):
            return subprocess.CompletedProcess(cmd, 1, stdout="", stderr=(
                "ERROR: Could not find a version that satisfies the requirement nvidia-cuda-runtime-cu12 "
                "(from faiss-gpu-cu12) (from versions: none)\nERROR: No matching distribution found for "
                "nvidia-cuda-runtime-cu12\n"))
        return subprocess.CompletedProcess(cmd, 0, stdout="", stderr="")


def test_an_optional_wheel_that_pip_cannot_install_is_one_warning_and_the_required_ones_are_installed(
        tmp_path, capsys):
    w = folder(tmp_path, PY312)
    pip = DepsPip()
    cmds = install(w, tmp_path, pip=pip)
    assert pip.calls == cmds and len(cmds) == 2                    # required first, then each optional alone
    names = [[c.rsplit("/", 1)[-1] for c in cmd if c.endswith(".whl")] for cmd in cmds]
    assert sorted(names[0]) == ["bitsandbytes-0.45.0-py3-none-manylinux_2_24_x86_64.whl",
                                "peft-0.14.0-py3-none-any.whl"]
    assert names[1] == ["faiss_gpu_cu12-1.10.0-cp312-cp312-manylinux_2_28_x86_64.whl"]
    assert all("-c" in cmd for cmd in cmds)                        # the image's torch pinned in both
    warned = [ln for ln in capsys.readouterr().out.splitlines() if "not installed (optional)" in ln]
    assert len(warned) == 1 and "faiss-gpu-cu12" in warned[0] and "nvidia-cuda-runtime-cu12" in warned[0]
    assert (tmp_path / "marker").exists()                          # done: the required ones are in
