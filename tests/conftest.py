from pathlib import Path

import pytest

from kpp_sdk.instances import instance_root

#: The benchmark instances the package ships (SK, MC50, Gset: kpp_sdk/data/cim_instances).
CIM_INSTANCES = instance_root()


@pytest.fixture(scope="session")
def cim_instances() -> Path:
    if not CIM_INSTANCES.is_dir():  # only in a broken installation: the package ships them
        pytest.fail(f"the package's instance data is missing ({CIM_INSTANCES}); reinstall kpp-sdk")
    return CIM_INSTANCES
