"""The layout pass moved modules; their old import paths keep working for one release."""

import importlib
import subprocess
import sys

import pytest

from kpp_sdk._moved import MOVED


@pytest.mark.parametrize("old,new", sorted(MOVED.items()))
def test_old_module_path_is_the_new_module_with_a_deprecation_warning(old, new):
    code = (f"import warnings, importlib; warnings.simplefilter('error', DeprecationWarning)\n"
            f"try:\n    importlib.import_module({old!r})\nexcept DeprecationWarning as w:\n"
            f"    assert {new!r} in str(w), w\nelse:\n    raise SystemExit('no warning')\n"
            f"warnings.simplefilter('ignore')\n"
            f"assert importlib.import_module({old!r}) is importlib.import_module({new!r})\n"
            f"assert importlib.import_module({new!r}).__spec__.name == {new!r}\n")
    subprocess.run([sys.executable, "-c", code], check=True)


def test_torch_bridge_names_resolve_to_their_new_homes():
    pytest.importorskip("torch")
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        tb = importlib.import_module("kpp_sdk.torch_bridge")
    from kpp_sdk import IsingProblem
    from kpp_sdk.interop import as_device
    from kpp_sdk.interop.kaiwu import DeviceOptimizer, KaiwuOptimizerDevice
    from kpp_sdk.models.samplers import BoltzmannSampler, pseudo_likelihood_beta

    assert tb.BoltzmannSampler is BoltzmannSampler
    assert tb.KaiwuOptimizerDevice is KaiwuOptimizerDevice
    assert tb.DeviceOptimizer is DeviceOptimizer
    assert tb.as_device is as_device
    assert tb.estimate_beta is pseudo_likelihood_beta
    assert tb.kaiwu_solution_to_spins == IsingProblem.spins_from_kaiwu
    with pytest.raises(AttributeError):
        tb.no_such_name
