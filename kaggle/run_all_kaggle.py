"""Headless Kaggle entry point (`kaggle kernels push -p kaggle/`).

Copies the code dataset to /kaggle/working/code (attached datasets are read-only), installs the
wheels dataset offline when attached, then runs the kaggle_eedi profile with run_all.py. Every
input is found in either mount layout (/kaggle/input/<slug> or, on newer runtimes,
/kaggle/input/datasets/<owner>/<slug>; Kaggle Models in theirs) by helpers.kaggle.inputs: the
profile's /kaggle/input vars are resolved and passed on as --var. Edit CODE/WHEELS (slugs) and
VARS to your datasets.
"""
import os
import shutil
import subprocess
import sys

CODE = "eedi-distill-code"          # this repository, uploaded as a dataset (its slug)
WHEELS = "eedi-distill-wheels"      # tools/build_wheels.sh output, uploaded as a dataset (its slug)
PROFILE = "kaggle_eedi"
VARS = {}                           # over the profile's vars, e.g. {"embedder": "/kaggle/input/my-round1-embedder"}
RESUME_DIR = None                   # session 2: "/kaggle/input/<session-1 notebook>/eedi_round2_kd"


def find_code(root, slug=CODE):
    """The code dataset: the folder under ``root`` with run_all.py and helpers/; the one whose path
    names ``slug`` first. Written in each entry script (a kernel pushes only its own folder, and
    nothing of helpers can be imported before this finds it); the rest is helpers.kaggle.inputs."""
    hits = []
    for folder, dirs, files in os.walk(root):
        dirs.sort()
        if folder[len(root):].count(os.sep) >= 4:
            dirs[:] = []
        if "run_all.py" in files and os.path.isfile(os.path.join(folder, "helpers", "kaggle", "inputs.py")):
            hits.append(folder)
            dirs[:] = []
    if not hits:
        raise SystemExit(f"no code dataset (run_all.py and helpers/) under {root}: attach {slug}")
    return next((h for h in hits if slug in h.split(os.sep)), hits[0])


def main(root="/kaggle/input", work="/kaggle/working/code", run=subprocess.run, install=None):
    if not os.path.isdir(work):
        shutil.copytree(find_code(root), work)
    sys.path.insert(0, work)
    from helpers.kaggle.inputs import kernel_command, resolve_input
    cmd = kernel_command(work, PROFILE, VARS, WHEELS, root=root, install=install)
    # stop cleanly at the last finished step / epoch before Kaggle's 12 h limit (README "Two sessions")
    cmd += ["--time_budget", "11h"]
    if RESUME_DIR:
        cmd += ["--from", "train_kd", "--resume_dir", resolve_input(RESUME_DIR, None, root)]
    return run(cmd, cwd=work).returncode


if __name__ == "__main__":
    sys.exit(main())
