"""The learning-rate schedule of ``fit``: the rate each step is taken with, a resumed run that
equals an uninterrupted one mid-decay, and bad settings refused before any step."""

import itertools
import json
import re

import pytest
import torch
from kpp_sdk.models import (
    InvalidDataError,
    RestrictedBoltzmannMachine,
    TrainingInterrupted,
    fit,
    make_optimizer,
)
from kpp_sdk.models.datasets import load_dataset
from kpp_sdk.models.samplers import ContrastiveDivergence

from kpp_sdk.cli import main

BAS = torch.as_tensor(load_dataset("bas").train)
EPOCHS, BATCH = 3, 4


class RecordingCD(ContrastiveDivergence):
    """CD-1 that records the optimizer's rate at every negative phase (one per step)."""

    def __init__(self, opt, **kw):
        super().__init__(1, seed=3, **kw)
        self.opt, self.rates = opt, []

    def negative(self, model, visible=None):
        self.rates.append(self.opt.param_groups[0]["lr"])
        return super().negative(model, visible)


def _rbm():
    return RestrictedBoltzmannMachine(9, 5, generator=torch.Generator().manual_seed(1))


def _fit(model, **kw):
    opt = make_optimizer(model, lr=0.1, momentum=0.5)
    sampler = RecordingCD(opt)
    history = fit(model, BAS, sampler, epochs=EPOCHS, batch_size=BATCH, optimizer=opt, seed=5,
                  **kw)
    return sampler.rates, history


def test_each_step_is_taken_at_the_scheduled_rate():
    steps = EPOCHS * -(-len(BAS) // BATCH)
    rates, _ = _fit(_rbm(), lr_decay="linear", lr_decay_start=0.5)
    assert len(rates) == steps
    expected = [0.1 * (1 - max(0.0, t / steps - 0.5) / 0.5) for t in range(steps)]
    assert rates == pytest.approx(expected, rel=1e-12)
    assert rates[-1] == pytest.approx(0.1 / (0.5 * steps))  # one decay step above zero
    constant, _ = _fit(_rbm())
    assert constant == [0.1] * steps


def test_the_decay_changes_the_weights_and_none_keeps_them_as_before():
    a, b, c = _rbm(), _rbm(), _rbm()
    _fit(a, lr_decay="linear")
    _fit(b)
    _fit(c, lr_decay=None, lr_decay_start=0.5)  # the start is unused without a decay
    assert not torch.equal(a.quadratic_coef, b.quadratic_coef)
    assert torch.equal(b.quadratic_coef, c.quadratic_coef)


def test_a_run_stopped_during_the_decay_resumes_at_the_same_rates():
    straight = _rbm()
    rates, expected = _fit(straight, lr_decay="linear", lr_decay_start=0.25)
    stopped, states, calls = _rbm(), [], itertools.count()
    with pytest.raises(TrainingInterrupted):
        _fit(stopped, lr_decay="linear", lr_decay_start=0.25, on_checkpoint=states.append,
             stop=lambda: next(calls) >= 7)
    # a fresh optimizer, as a new process would build, continues from the saved state
    resumed_rates, history = _fit(stopped, lr_decay="linear", lr_decay_start=0.25,
                                  state=states[-1])
    assert resumed_rates == pytest.approx(rates[7:], rel=1e-12)
    assert torch.equal(stopped.quadratic_coef, straight.quadratic_coef)
    assert [h["objective"] for h in history] == [h["objective"] for h in expected]


@pytest.mark.parametrize("kw, message", [
    ({"lr_decay": "cosine"}, "lr_decay must be one of None, 'linear'"),
    ({"lr_decay": "linear", "lr_decay_start": 1.0}, "in [0, 1)"),
    ({"lr_decay": "linear", "lr_decay_start": -0.1}, "in [0, 1)"),
])
def test_bad_schedules_are_refused_before_any_step(kw, message):
    model = _rbm()
    before = model.quadratic_coef.clone()
    with pytest.raises(InvalidDataError, match=re.escape(message)):
        _fit(model, **kw)
    assert torch.equal(model.quadratic_coef, before)


def test_kpp_train_takes_the_schedule_records_it_and_refuses_bad_ones(tmp_path, capsys):
    out = tmp_path / "run"
    code = main(["train", "rbm", "--dataset", "bas", "--device", "sa.cpu", "--epochs", "2",
                 "--hidden", "4", "--batch-size", "7", "--lr-decay", "linear",
                 "--lr-decay-start", "0.5", "--eval", "none", "--out", str(out), "--no-progress"])
    assert code == 0, capsys.readouterr().err
    args = json.loads((out / "log.json").read_text())["args"]
    assert (args["lr_decay"], args["lr_decay_start"]) == ("linear", 0.5)
    for argv, message in [
        (["rbm", "--lr-decay-start", "1.5"], "--lr-decay-start is the fraction"),
        (["qgan", "--lr-decay", "linear"], "--lr-decay applies to the SGD-trained models"),
    ]:
        code = main(["train", *argv, "--dataset", "bas", "--device", "sa.cpu", "--epochs", "1",
                     "--out", str(tmp_path / "x"), "--no-progress"])
        err = capsys.readouterr().err
        assert code == 2 and message in err, (argv, err)
        assert not (tmp_path / "x").exists()
