"""Kaggle submission entry point (`kaggle kernels push -p kaggle/submit/`, see README "Submit").

Inference only, internet off: copies the code dataset to /kaggle/working/code, installs the wheels
dataset offline when attached, then runs notebooks/05_submit.ipynb through run_all.py with the
`submit` profile, which writes /kaggle/working/submission.csv (checked before it is written).
Every input is found in either mount layout (/kaggle/input/<slug> or, on newer runtimes,
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
VARS = {}    # over the profile's vars, e.g. {"student": "/kaggle/input/my-student/lora_epoch_4"}


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
    from helpers.kaggle.inputs import kernel_command
    cmd = kernel_command(work, "submit", VARS, WHEELS, root=root, install=install)
    return run(cmd, cwd=work).returncode


if __name__ == "__main__":
    sys.exit(main())
