"""Checkpoint files are checked before they are trusted: every bad version, configuration,
parameter name, claimed size or weight is a CheckpointError naming it, and nothing a file
claims is allocated before the file is shown to hold it."""

import pytest
import torch
from kpp_sdk.models import (
    BoltzmannMachine,
    CheckpointError,
    DeepBeliefNetwork,
    GaussianBernoulliRBM,
    RestrictedBoltzmannMachine,
    build_model,
    load_checkpoint,
    load_training_state,
    save_checkpoint,
)
from kpp_sdk.models.qdiffusion import QDiffusion


def _payload(model=None, **changes):
    model = model or RestrictedBoltzmannMachine(6, 3)
    p = {"format": "kpp-model-checkpoint", "version": 1, "config": model.config(),
         "state_dict": dict(model.state_dict()), "extra": {}}
    for key, value in changes.items():
        if value is _DROP:
            p.pop(key)
        else:
            p[key] = value
    return p


_DROP = object()


def _write(tmp_path, payload, name="c.pt"):
    path = tmp_path / name
    torch.save(payload, path)
    return path


@pytest.mark.parametrize("version", ["1", 1.5, True, 0, -3, None, [1], 2])
def test_a_bad_version_is_a_checkpoint_error(tmp_path, version):
    path = _write(tmp_path, _payload(version=version))
    match = "newer kpp-sdk" if version == 2 else "not a version number"
    with pytest.raises(CheckpointError, match=match):
        load_checkpoint(path)
    with pytest.raises(CheckpointError, match=match):
        load_training_state(path)


@pytest.mark.parametrize("config, match", [
    ("RestrictedBoltzmannMachine", "must be a dict"),
    ({"num_visible": 6, "num_hidden": 3}, "names no model class"),
    ({"class": "TransformerXL", "layers": 3}, "unknown model class 'TransformerXL'"),
    ({"class": "RestrictedBoltzmannMachine", "num_visble": 6, "num_hidden": 3},
     "does not describe a RestrictedBoltzmannMachine"),
    ({"class": "RestrictedBoltzmannMachine", "num_visible": "six", "num_hidden": 3},
     "does not describe"),
    ({"class": "RestrictedBoltzmannMachine", "num_visible": -6, "num_hidden": 3},
     "negative sizes"),
    ({"class": "DeepBeliefNetwork", "layer_sizes": 6}, "does not describe"),
])
def test_a_bad_configuration_is_a_checkpoint_error(tmp_path, config, match):
    with pytest.raises(CheckpointError, match=match):
        load_checkpoint(_write(tmp_path, _payload(config=config)))


def test_missing_or_mistyped_fields_are_checkpoint_errors(tmp_path):
    good = RestrictedBoltzmannMachine(6, 3).state_dict()
    cases = [
        (_payload(state_dict=_DROP), "'state_dict' must be a dict"),
        (_payload(config=_DROP), "'config' must be a dict"),
        (_payload(extra=[1, 2]), "'extra' must be a dict"),
        (_payload(state_dict={**good, "linear_bias": [0.0] * 9}), "not a tensor"),
        (_payload(state_dict={"quadratic_coef": good["quadratic_coef"]}),
         "lacks the parameter\\(s\\) linear_bias"),
        (_payload(state_dict={**good, "momentum": torch.zeros(3)}),
         "with parameter\\(s\\) momentum"),
        (_payload(training=[1]), "training state must be a dict"),
        ({"format": "kpp-model-checkpoint"}, "not a version number"),
        ([1, 2, 3], "not a kpp model checkpoint"),
    ]
    for k, (payload, match) in enumerate(cases):
        with pytest.raises(CheckpointError, match=match):
            load_checkpoint(_write(tmp_path, payload, f"{k}.pt"))
    # into a model: the same checks
    with pytest.raises(CheckpointError, match="with parameter\\(s\\) momentum"):
        load_checkpoint(_write(tmp_path, _payload(state_dict={**good, "momentum": torch.zeros(3)})),
                        RestrictedBoltzmannMachine(6, 3))


def test_a_truncated_file_is_a_checkpoint_error(tmp_path):
    path = save_checkpoint(tmp_path / "m.pt", RestrictedBoltzmannMachine(6, 3))
    path.write_bytes(path.read_bytes()[:300])
    with pytest.raises(CheckpointError, match="not a readable kpp model checkpoint"):
        load_checkpoint(path)


@pytest.mark.parametrize("config", [
    {"class": "RestrictedBoltzmannMachine", "num_visible": 30000, "num_hidden": 30000},
    {"class": "BoltzmannMachine", "num_visible": 30000, "num_hidden": 0},
    {"class": "DeepBeliefNetwork", "layer_sizes": [6, 30000, 30000]},
    {"class": "GaussianBernoulliRBM", "num_visible": 30000, "num_hidden": 30000},
    {"class": "QDiffusion", "seq_len": 4000, "vocab_size": 40, "hidden": 8, "num_layers": 1},
])
def test_a_tiny_file_claiming_a_huge_model_fails_before_anything_is_built(tmp_path, config,
                                                                          monkeypatch):
    tiny = {"quadratic_coef": torch.zeros(6, 3), "linear_bias": torch.zeros(9)}
    path = _write(tmp_path, _payload(config=config, state_dict=tiny))
    assert path.stat().st_size < 5000
    built = []
    for cls in (RestrictedBoltzmannMachine, BoltzmannMachine, GaussianBernoulliRBM,
                DeepBeliefNetwork, QDiffusion):
        monkeypatch.setattr(cls, "__init__", lambda self, *a, **k: built.append(a or k))
    with pytest.raises(CheckpointError, match="has shape|lacks the parameter|with parameter"):
        load_checkpoint(path)
    assert built == []  # no constructor ran, so nothing of the claimed size was allocated


@pytest.mark.parametrize("make", [
    lambda: RestrictedBoltzmannMachine(7, 4), lambda: BoltzmannMachine(5, 2),
    lambda: GaussianBernoulliRBM(4, 3), lambda: DeepBeliefNetwork([8, 5, 3]),
    lambda: QDiffusion(5, 7, hidden=6, num_layers=2),
    lambda: QDiffusion(3, 4, hidden=5, num_layers=0),
])
def test_the_shapes_a_configuration_claims_are_those_the_model_has(make):
    model = make()
    cfg = dict(model.config())
    claimed = type(model).parameter_shapes(**{k: v for k, v in cfg.items() if k != "class"})
    assert claimed == {k: tuple(v.shape) for k, v in model.state_dict().items()}
    assert type(build_model(cfg)) is type(model)


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), -float("inf")])
def test_non_finite_weights_do_not_load(tmp_path, bad):
    model = RestrictedBoltzmannMachine(6, 3)
    with torch.no_grad():
        model.quadratic_coef[2, 1] = bad
    path = save_checkpoint(tmp_path / "m.pt", model)
    with pytest.raises(CheckpointError, match="quadratic_coef holds 1 NaN or infinite"):
        load_checkpoint(path)
    target = RestrictedBoltzmannMachine(6, 3)
    before = target.quadratic_coef.detach().clone()
    with pytest.raises(CheckpointError, match="quadratic_coef holds 1 NaN or infinite"):
        load_checkpoint(path, target)
    assert torch.equal(target.quadratic_coef, before)  # the model was left as it was


def test_build_model_refuses_a_configuration_the_constructor_refuses():
    with pytest.raises(CheckpointError, match="does not build a RestrictedBoltzmannMachine"):
        build_model({"class": "RestrictedBoltzmannMachine", "num_visible": 0, "num_hidden": 3})
