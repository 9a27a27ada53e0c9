"""Headless Kaggle entry point (`kaggle kernels push -p kaggle/`).

Copies the code dataset to /kaggle/working/code (attached datasets are read-only), installs the
wheels dataset offline when attached, then runs the kaggle_eedi profile with run_all.py.
Edit CODE/WHEELS and the --set lines to your dataset names.
"""
import glob
import os
import shutil
import subprocess
import sys

CODE = "/kaggle/input/eedi-distill-code"          # this repository, uploaded as a dataset
WHEELS = "/kaggle/input/eedi-distill-wheels"      # tools/build_wheels.sh output, uploaded as a dataset
WORK = "/kaggle/working/code"

if not os.path.isfile(os.path.join(CODE, "run_all.py")):   # newer runtimes: /kaggle/input/datasets/<owner>/<slug>
    CODE = next((os.path.dirname(p) for p in sorted(glob.glob("/kaggle/input/**/run_all.py", recursive=True))), CODE)
if not os.path.isdir(WORK):
    shutil.copytree(CODE, WORK)
sys.path.insert(0, WORK)
from helpers.kaggle.offline_install import SEARCH, install_wheels  # noqa: E402
# only what the image lacks; a missing required wheel stops here, naming it (optional faiss: skipped)
install_wheels(WHEELS if os.path.isdir(WHEELS) else SEARCH)
# stop cleanly at the last finished step / epoch before Kaggle's 12 h limit (README "Two sessions")
cmd = [sys.executable, "run_all.py", "--profile", "kaggle_eedi", "--time_budget", "11h"]
# session 2: cmd += ["--from", "train_kd", "--resume_dir", "/kaggle/input/<session-1 notebook>/eedi_round2_kd"]
# e.g. cmd += ["--set", "mine.model_name_or_path=/kaggle/input/my-round1-embedder"]
sys.exit(subprocess.run(cmd, cwd=WORK).returncode)
