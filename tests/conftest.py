import os
from pathlib import Path

import pytest

pytest_plugins = ["tests.fixtures.models"]      # tiny models: builders and session fixtures

REPO = Path(__file__).resolve().parent.parent
SHARED = Path(os.environ.get("EEDI_SHARED_DIR", REPO.parent / "shared"))


@pytest.fixture
def shared_dir():
    if not SHARED.is_dir():
        pytest.skip(f"../shared not found at {SHARED}: the real Eedi sample and FlagEmbedding "
                    "fixtures are only on the project machines")
    return SHARED


@pytest.fixture(scope="session")
def repo_root():
    return REPO


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """The tiny decoder student with mined + scored train / test files (tests.factories.tiny_kd_folder)."""
    from tests.factories import tiny_kd_folder
    return tiny_kd_folder(tmp_path_factory.mktemp("kd"))
