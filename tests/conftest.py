import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def _shared_data() -> Path:
    env = os.environ.get("KPP_SHARED_DATA")
    return Path(env) if env else REPO.parent / "shared" / "data"


SHARED_DATA = _shared_data()
CIM_INSTANCES = SHARED_DATA / "cim-instances"


@pytest.fixture(scope="session")
def cim_instances() -> Path:
    if not CIM_INSTANCES.is_dir():
        pytest.skip(f"shared instance data not found at {CIM_INSTANCES} (set KPP_SHARED_DATA)")
    return CIM_INSTANCES
