#!/usr/bin/env bash
# Write DIR/dataset-metadata.json for `kaggle datasets create` and print the upload commands.
#
#   tools/kaggle_dataset_meta.sh DIR SLUG [TITLE]     # owner: $KAGGLE_USERNAME (or edit the file)
#
# Never run `kaggle datasets init -p DIR` afterwards: it overwrites this file with a template
# without asking. This script refuses to replace an existing dataset-metadata.json (FORCE=1 does).
# Kaggle's limits: title 6-50 characters, slug 3-50 (letters, digits, dashes), one license.
# `--dir-mode zip` uploads each subfolder as an archive that Kaggle unpacks; the default (skip)
# silently leaves subfolders out. Check the dataset's file listing on kaggle.com after the upload.
set -euo pipefail
dir=${1:?usage: tools/kaggle_dataset_meta.sh DIR SLUG [TITLE]}
slug=${2:?usage: tools/kaggle_dataset_meta.sh DIR SLUG [TITLE]}
title=${3:-$slug}
license=${LICENSE:-other}
owner=${KAGGLE_USERNAME:-YOUR_KAGGLE_USERNAME}
if ! [[ $slug =~ ^[A-Za-z0-9-]{3,50}$ ]]; then echo "slug '$slug': 3-50 letters, digits or dashes" >&2; exit 2; fi
if (( ${#title} < 6 || ${#title} > 50 )); then echo "title '$title': 6-50 characters" >&2; exit 2; fi
meta="$dir/dataset-metadata.json"
if [[ -e $meta && -z ${FORCE:-} ]]; then
  echo "$meta exists (kept; FORCE=1 replaces it)" >&2
else
  printf '{"title": "%s", "id": "%s/%s", "licenses": [{"name": "%s"}]}\n' "$title" "$owner" "$slug" "$license" > "$meta"
fi
[[ $owner == YOUR_KAGGLE_USERNAME ]] && echo "edit the owner in $meta (or set KAGGLE_USERNAME and FORCE=1)"
echo "upload:    kaggle datasets create -p $dir --dir-mode zip"
echo "new files: kaggle datasets version -p $dir --dir-mode zip -m \"<notes>\""
echo "attach as: \"dataset_sources\": [\"$owner/$slug\"] in kaggle/kernel-metadata.json"
