#!/usr/bin/env bash
# Build a folder of wheels to attach to Kaggle as a dataset, for offline installs.
#
#   tools/build_wheels.sh [OUT_DIR]          # default: wheels/
#   kaggle datasets init -p wheels && kaggle datasets create -p wheels   # upload (needs the kaggle CLI)
#
# Wheels are for Kaggle's image: CPython 3.10/3.11, manylinux x86_64. Dependencies that the image
# already has (torch, transformers, numpy...) are not downloaded (--no-deps for the GPU packages),
# so the folder stays small. The notebooks' first cell runs
#   pip install --no-index --find-links <folder> -r <folder>/requirements.txt
# when the folder is attached, and does nothing otherwise.
set -euo pipefail
out=${1:-wheels}
here=$(cd "$(dirname "$0")/.." && pwd)
mkdir -p "$out"
for pyver in 3.10 3.11; do
  python3 -m pip download --dest "$out" --only-binary=:all: --no-deps \
    --python-version "$pyver" --platform manylinux2014_x86_64 --platform manylinux_2_24_x86_64 --platform manylinux_2_27_x86_64 \
    --platform manylinux_2_28_x86_64 --platform manylinux_2_31_x86_64 --platform manylinux_2_34_x86_64 \
    --platform manylinux_2_17_x86_64 -r "$here/requirements-kaggle.txt"
done
# papermill's own small dependencies, in case the image lacks them
python3 -m pip download --dest "$out" --only-binary=:all: --python-version 3.10 \
  --platform manylinux2014_x86_64 --platform manylinux_2_17_x86_64 \
  "papermill>=2.6" "pyyaml" "tenacity" "ansicolors" "entrypoints" || true
cp "$here/requirements-kaggle.txt" "$out/requirements.txt"
cat > "$out/dataset-metadata.json" <<JSON
{"title": "eedi-distill-wheels", "id": "YOUR_KAGGLE_USERNAME/eedi-distill-wheels", "licenses": [{"name": "other"}]}
JSON
echo "wheels in $out: $(ls "$out"/*.whl | wc -l) files, $(du -sh "$out" | cut -f1)"
