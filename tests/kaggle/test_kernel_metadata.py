"""The Kaggle kernels ask for two T4s, explicitly.

`machine_shape` picks the GPU: `enable_gpu` alone can land on a P100 (kaggle-cli #821, a server
bug Kaggle confirmed), which the image's cu128 torch cannot run (kaggle-cli #1151). Two T4s are
`NvidiaTeslaT4`: Kaggle's kaggle-cli PR #1198 (merged 2026-09-17, closing #1196) documents
"GPU T4 x2 (default GPU; single T4 is not supported) -> NvidiaTeslaT4" and removes
`NvidiaTeslaT4Highmem` from the docs as "an internal admin-only pool". Older docs (and issue 15)
give `NvidiaTeslaT4Highmem` for T4 x2; that is out of date and must not be used.
"""
import json

import pytest

KERNELS = ["kaggle/kernel-metadata.json", "kaggle/submit/kernel-metadata.json"]


@pytest.mark.parametrize("path", KERNELS)
def test_kernels_ask_for_two_t4s_by_machine_shape(repo_root, path):
    meta = json.loads((repo_root / path).read_text())
    assert meta["enable_gpu"] is True and meta["machine_shape"] == "NvidiaTeslaT4"
    assert "Highmem" not in json.dumps(meta) and meta["enable_internet"] is False
    assert (repo_root / path).parent.joinpath(meta["code_file"]).is_file()
    assert any(s.endswith("/eedi-distill-code") for s in meta["dataset_sources"])
