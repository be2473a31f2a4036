"""Options are declared once per device (kpp_sdk.options) and one validator serves every caller."""

import numpy as np
import pytest

import kpp_sdk
from kpp_sdk import Device, DeviceProperties, InvalidOptionError, IsingProblem, RunResult
from kpp_sdk.cli import main
from kpp_sdk.device import JobSpec
from kpp_sdk.options import Option, OptionSpec, check_int
from kpp_sdk.registry import list_devices
from kpp_sdk.testing import CountingExecutor


def _available_classes():
    out = []
    for info in list_devices():
        if info.available:
            out.append(kpp_sdk.device_class(info.name))
    return out


@pytest.mark.parametrize("cls", _available_classes(), ids=lambda c: c.name)
def test_every_option_of_every_device_is_documented_and_shown_by_help(cls):
    for name, opt in cls.OPTIONS.items():
        assert opt.name == name and opt.doc.strip(), f"{cls.name}.{name} has no doc"
    doc = cls.sample.__doc__
    for name in cls.OPTIONS:
        assert f"\n    {name} [" in doc, f"help({cls.name}.sample) does not show {name}"
    import inspect

    params = inspect.signature(cls.sample).parameters
    assert set(cls.OPTIONS) <= set(params)


@pytest.mark.parametrize("value", [np.int64(3), np.int32(3), 3])
def test_numpy_integers_are_integers_for_num_reads_and_every_int_option(value):
    sa = kpp_sdk.get_device("sa.cpu")
    ss = sa.sample(IsingProblem.random_sk(6, seed=0), num_reads=value, num_threads=value,
                   num_sweeps=value, seed=0)
    assert ss.num_reads == 3


@pytest.mark.parametrize("bad", [True, 2.0, "2"])
def test_bools_floats_and_strings_are_not_integers(bad):
    sa = kpp_sdk.get_device("sa.cpu")
    with pytest.raises(InvalidOptionError, match="num_threads must be an integer"):
        sa.submit(IsingProblem.random_sk(6, seed=0), num_threads=bad)
    with pytest.raises(InvalidOptionError, match="num_reads must be an integer"):
        check_int(bad, "num_reads", ge=1)


def test_validate_checks_what_submit_checks_and_queues_nothing():
    ex = CountingExecutor()
    sa = kpp_sdk.get_device("sa.cpu", executor=ex)
    p = IsingProblem.random_sk(8, seed=0)
    spec = sa.validate(p, 4, num_sweeps=7)
    assert isinstance(spec, JobSpec) and spec.num_reads == 4
    assert spec.options["num_sweeps"] == 7 and spec.options["acceptance"] == "metropolis"
    assert spec.prepared.betas.size == 7  # the schedule, built once for the job
    for bad in ({"initial_states": np.ones((3, 8))}, {"mode": "sample"}, {"nope": 1}):
        with pytest.raises(kpp_sdk.KppError):
            sa.validate(p, 4, **bad)
        with pytest.raises(kpp_sdk.KppError):
            sa.submit(p, num_reads=4, **bad)
    assert ex.count == 0
    ex.shutdown()


def test_sa_cpu_builds_the_default_schedule_once_per_job(monkeypatch):
    from kpp_sdk.devices import annealing

    calls = []
    real = annealing.default_beta_range
    monkeypatch.setattr(annealing, "default_beta_range", lambda p: calls.append(p) or real(p))
    sa = kpp_sdk.get_device("sa.cpu", num_sweeps=5)
    sa.sample(IsingProblem.random_sk(8, seed=0), num_reads=2, seed=0)
    assert len(calls) == 1


def test_a_device_declaring_plain_defaults_still_works():
    class Legacy(Device):
        name = "legacy.test"
        OPTIONS = {"flips": 0}

        @property
        def properties(self):
            return DeviceProperties(max_spins=8)

        def _run(self, problem, *, num_reads, seed, options, ctx):
            s = np.ones((num_reads, problem.n), dtype=np.int8)
            s[:, : options["flips"]] = -1
            return RunResult(s)

    d = Legacy()
    assert isinstance(Legacy.OPTIONS, OptionSpec)
    assert d.sample(IsingProblem.random_sk(4, seed=0), num_reads=2, flips=2).spins[0, 1] == -1
    with pytest.raises(kpp_sdk.UnknownOptionError, match="known options: num_reads, seed, flips"):
        d.submit(IsingProblem.random_sk(4, seed=0), flop=1)


def test_option_ranges_and_choices_are_enforced_with_the_allowed_values_in_the_message():
    spec = OptionSpec(t=Option(0.0, "knob", type=float, ge=0, le=1),
                      out=Option("raw", "mode", type=str, choices=("raw", "topk")))
    assert spec.validate({"t": np.float32(0.5)}) == {"t": 0.5}
    with pytest.raises(InvalidOptionError, match=r"t must be a finite number >= 0 and <= 1"):
        spec.validate({"t": 1.5})
    with pytest.raises(InvalidOptionError, match="t must be a finite number"):
        spec.validate({"t": float("nan")})
    with pytest.raises(InvalidOptionError, match="out must be one of 'raw', 'topk'"):
        spec.validate({"out": "all"})


def test_kpp_devices_options_prints_every_option(capsys):
    assert main(["devices", "--options", "cim.emulator"]) == 0
    out = capsys.readouterr().out
    for name in kpp_sdk.device_class("cim.emulator").OPTIONS:
        assert f"\n{name} [" in out
    assert main(["devices", "--options", "no.such"]) == 2
    assert "registered devices" in capsys.readouterr().err
