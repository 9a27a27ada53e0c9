"""Kaggle submission entry point (`kaggle kernels push -p kaggle/submit/`, see README "Submit").

Inference only, internet off: copies the code dataset to /kaggle/working/code, installs the wheels
dataset offline when attached, then runs notebooks/05_submit.ipynb through run_all.py with the
`submit` profile, which writes /kaggle/working/submission.csv (checked before it is written).
Edit CODE/WHEELS and the --var lines to your dataset names.
"""
import glob
import os
import shutil
import subprocess
import sys

CODE = "/kaggle/input/eedi-distill-code"          # this repository, uploaded as a dataset
WHEELS = "/kaggle/input/eedi-distill-wheels"      # tools/build_wheels.sh output, uploaded as a dataset
WORK = "/kaggle/working/code"


def found(path, marker):
    """``path`` if it holds ``marker``, else the first folder under /kaggle/input that does (newer
    runtimes mount datasets at /kaggle/input/datasets/<owner>/<slug>)."""
    if os.path.isfile(os.path.join(path, marker)):
        return path
    hits = sorted(glob.glob(f"/kaggle/input/**/{marker}", recursive=True))
    return os.path.dirname(hits[0]) if hits else path


CODE, WHEELS = found(CODE, "run_all.py"), found(WHEELS, "requirements.txt")
if not os.path.isdir(WORK):
    shutil.copytree(CODE, WORK)
sys.path.insert(0, WORK)
from helpers.kaggle.offline_install import install_wheels  # noqa: E402
install_wheels(WHEELS)          # only what the image lacks; a missing required wheel is named
cmd = [sys.executable, "run_all.py", "--profile", "submit"]
# e.g. cmd += ["--var", "student=/kaggle/input/my-student/lora_epoch_4", "--var", "base_model=/kaggle/input/bge-en-icl"]
sys.exit(subprocess.run(cmd, cwd=WORK).returncode)
