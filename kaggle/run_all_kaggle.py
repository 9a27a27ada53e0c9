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

if not os.path.isdir(WORK):
    shutil.copytree(CODE, WORK)
if os.path.isfile(os.path.join(WHEELS, "requirements.txt")):
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-index", "--find-links", WHEELS,
                    "-r", os.path.join(WHEELS, "requirements.txt")], check=True)
# stop cleanly at the last finished step / epoch before Kaggle's 12 h limit (README "Two sessions")
cmd = [sys.executable, "run_all.py", "--profile", "kaggle_eedi", "--time_budget", "11h"]
# session 2: cmd += ["--from", "train_kd", "--resume_dir", "/kaggle/input/<session-1 notebook>/eedi_round2_kd"]
# e.g. cmd += ["--set", "mine.embedder_name_or_path=/kaggle/input/my-round1-embedder"]
sys.exit(subprocess.run(cmd, cwd=WORK).returncode)
