#!/usr/bin/env bash
# Build a folder of wheels to attach to Kaggle as a dataset, for offline installs.
#
#   tools/build_wheels.sh [OUT_DIR] [--python "3.10 3.11 3.12"]   # default: wheels/, all three
#   tools/build_wheels.sh [OUT_DIR] --here                        # for the interpreter running it
#   then upload as the script prints: kaggle datasets create -p OUT_DIR
#
# Kaggle's image is CPython 3.12 (manylinux x86_64, glibc 2.35) with a CUDA torch and
# transformers 5.x. The default downloads wheels for 3.10, 3.11 and 3.12. `--here` builds for the
# interpreter and platform that run it: the exact image when run inside a Kaggle notebook with
# internet on (`!bash /kaggle/input/eedi-distill-code/tools/build_wheels.sh /kaggle/working/wheels
# --here`, then save the notebook's output /kaggle/working/wheels as the dataset, or download it).
# Only requirements-kaggle.txt's packages are fetched, without their dependencies (--no-deps: the
# image has torch, numpy...), plus papermill's small pure-Python dependencies. A line marked
# "optional" there (faiss-gpu-cu12, gguf) may have no wheel for a Python version: the build says
# so and goes on, and the install skips it (search then runs exact torch, helpers/embed/search.py).
# The notebooks' first cell (helpers.kaggle.offline_install) installs only what the image lacks.
# The folder holds plain files only, so no --dir-mode is needed to upload it.
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
out=wheels
pyvers="3.10 3.11 3.12"
mode=cross
while (($#)); do
  case $1 in
    --python) pyvers=${2//,/ }; shift 2 ;;
    --here) mode=here; shift ;;
    -h|--help) sed -n 2,20p "$0"; exit 0 ;;
    *) out=$1; shift ;;
  esac
done
py=${PYTHON:-python3}
mkdir -p "$out"
req=${REQUIREMENTS:-$here/requirements-kaggle.txt}
# "name>=x  # optional ..." -> the spec; required and optional lines apart
required=$(sed -e '/^\s*#/d' -e '/#.*\boptional\b/d' -e 's/#.*//' -e 's/\s*$//' -e '/^$/d' "$req")
optional=$(sed -n -e '/^\s*#/d' -e '/#.*\boptional\b/{s/#.*//;s/\s*$//;p}' "$req")
extras="tenacity ansicolors entrypoints"      # papermill's small dependencies, in case the image lacks them
platforms=()
for p in manylinux2014_x86_64 manylinux_2_17_x86_64 manylinux_2_24_x86_64 manylinux_2_27_x86_64 \
         manylinux_2_28_x86_64 manylinux_2_31_x86_64 manylinux_2_34_x86_64 manylinux_2_35_x86_64; do
  platforms+=(--platform "$p")
done

fetch() {  # fetch PYVER(or "") SPEC...
  local v=$1; shift
  if [[ -z $v ]]; then
    "$py" -m pip download --dest "$out" --only-binary=:all: --no-deps "$@"
  else
    "$py" -m pip download --dest "$out" --only-binary=:all: --no-deps --implementation cp \
      --python-version "$v" --abi "cp${v/./}" --abi abi3 --abi none "${platforms[@]}" "$@"
  fi
}

read -ra vers <<< "$pyvers"
[[ $mode == here ]] && vers=("")
for v in "${vers[@]}"; do
  label=${v:-$("$py" -c 'import sys; print("%d.%d" % sys.version_info[:2])') (this interpreter)}
  echo "== Python $label"
  # shellcheck disable=SC2086
  fetch "$v" $required $extras
  while read -r spec; do
    [[ -z $spec ]] && continue
    fetch "$v" "$spec" || echo "warning: no $spec wheel for Python $label (optional: the install skips it)"
  done <<< "$optional"
done
cp "$req" "$out/requirements.txt"
"$here/tools/kaggle_dataset_meta.sh" "$out" eedi-distill-wheels "eedi-distill wheels"
echo "wheels in $out: $(ls "$out"/*.whl | wc -l) files, $(du -sh "$out" | cut -f1)"
