#!/usr/bin/env bash
# Stage this repository as the Kaggle code dataset (attached read-only at
# /kaggle/input/eedi-distill-code, or /kaggle/input/datasets/<owner>/eedi-distill-code).
#
#   tools/make_code_dataset.sh [OUT_DIR]        # default: /tmp/eedi-distill-code
#   kaggle datasets create -p OUT_DIR --dir-mode zip     # first time (the script prints it)
#
# What goes in: the files git tracks plus untracked ones it does not ignore, so no .venv,
# model_output/, helpers/.cache (converted demo models), wheels/ or .git. The subfolders
# (helpers/, notebooks/, configs/, kaggle/, tools/, data/) need --dir-mode zip: the default skips them.
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
out=${1:-/tmp/eedi-distill-code}
rm -rf "$out"
mkdir -p "$out"
if git -C "$here" rev-parse --is-inside-work-tree >/dev/null 2>&1; then
  git -C "$here" ls-files -co --exclude-standard -z | (cd "$here" && tar --null -T - -cf -) | tar -C "$out" -xf -
else
  tar -C "$here" --exclude=.venv --exclude=model_output --exclude=.cache --exclude=wheels --exclude=.git \
      --exclude=__pycache__ -cf - . | tar -C "$out" -xf -
fi
find "$out" -name __pycache__ -prune -exec rm -rf {} +
"$here/tools/kaggle_dataset_meta.sh" "$out" eedi-distill-code "eedi-distill code"
echo "code dataset in $out: $(find "$out" -type f | wc -l) files, $(du -sh "$out" | cut -f1)"
