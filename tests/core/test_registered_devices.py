"""The conformance suite over every registered, locally available device.

Remote devices are covered in tests/cloud against a real server on 127.0.0.1; devices whose
optional dependency is missing are listed as skipped with the reason.
"""

import pytest

from kpp_sdk import list_devices
from kpp_sdk.testing import conformance_for

_ROWS = list_devices()

for _row in _ROWS:
    if _row.available and not _row.properties.is_remote:
        _cls = conformance_for(_row.name)
        globals()[_cls.__name__] = _cls


@pytest.mark.parametrize("row", [r for r in _ROWS if not r.available], ids=lambda r: r.name)
def test_unavailable_devices_say_why(row):
    assert row.reason
    assert not row.reason.startswith("failed to load"), f"{row.name} is broken: {row.reason}"
    assert "pip install" in row.reason, "a missing dependency must name the command that fixes it"
    pytest.skip(f"{row.name} unavailable here: {row.reason}")


def test_sa_cpu_is_registered_and_available():
    assert any(r.name == "sa.cpu" and r.available for r in _ROWS)
