"""`kpp train`: the main job, end to end on tiny settings."""

import json
import math
import subprocess
import sys

import numpy as np
import pytest

import kpp_sdk.registry
from kpp_sdk import Device, DeviceProperties
from kpp_sdk.cli import main

PNG = b"\x89PNG\r\n\x1a\n"


def _run(capsys, *argv):
    code = main(["train", *argv, "--no-progress"])
    out = capsys.readouterr()
    return code, out.out, out.err


def _log(folder):
    return json.loads((folder / "log.json").read_text())


def test_train_rbm_on_bars_and_stripes_writes_checkpoint_log_and_figures(tmp_path, capsys):
    out = tmp_path / "bas"
    code, stdout, err = _run(capsys, "rbm", "--dataset", "bas", "--device", "sa.cpu", "--epochs",
                             "3", "--hidden", "8", "--batch-size", "14", "--lr", "0.1",
                             "--out", str(out))
    assert code == 0, err
    for name in ("checkpoint.pt", "log.json", "samples.png", "loglik.png"):
        assert (out / name).is_file()
    assert (out / "samples.png").read_bytes()[:8] == PNG
    log = _log(out)
    assert [r["epoch"] for r in log["history"]] == [0, 1, 2, 3]
    assert all(r["eval_method"] == "exact" for r in log["history"])
    ll = log["result"]["final_test_log_likelihood"]
    assert -9 * math.log(2) - 1 < ll < -math.log(14)
    assert log["device"]["name"] == "sa.cpu" and "BoltzmannSampler" in log["sampler"]
    assert log["history"][1]["sampler"]["device"] == "sa.cpu"
    assert "test log-likelihood" in stdout and "(exact)" in stdout


def test_readme_command_on_digits_runs_with_ais_evaluation(tmp_path, capsys):
    out = tmp_path / "demo"
    code, stdout, err = _run(capsys, "rbm", "--dataset", "digits", "--device", "sa.cpu",
                             "--epochs", "1", "--ais-betas", "100", "--ais-chains", "20",
                             "--sample-sweeps", "50", "--out", str(out))
    assert code == 0, err
    log = _log(out)
    assert log["history"][-1]["eval_method"] == "ais"
    assert log["model"] == {"class": "RestrictedBoltzmannMachine", "num_visible": 64,
                            "num_hidden": 64}
    assert log["result"]["seconds_per_epoch"] > 0
    assert "AIS" in stdout


def test_train_bm_with_hidden_units_and_pcd_baseline(tmp_path, capsys):
    code, _, err = _run(capsys, "bm", "--dataset", "bas", "--hidden", "3", "--epochs", "2",
                        "--batch-size", "14", "--out", str(tmp_path / "bm"))
    assert code == 0, err
    assert _log(tmp_path / "bm")["model"] == {"class": "BoltzmannMachine", "num_visible": 9,
                                              "num_hidden": 3}
    code, _, err = _run(capsys, "rbm", "--dataset", "bas", "--sampler", "pcd", "--hidden", "4",
                        "--epochs", "2", "--out", str(tmp_path / "pcd"))
    assert code == 0, err
    log = _log(tmp_path / "pcd")
    assert log["device"] is None and "PersistentContrastiveDivergence" in log["sampler"]


def test_train_dbn_reports_layer_curves_and_classifier_accuracy(tmp_path, capsys):
    out = tmp_path / "dbn"
    code, stdout, err = _run(capsys, "dbn", "--dataset", "digits", "--hidden", "16,8",
                             "--epochs", "1", "--eval", "none", "--finetune-epochs", "2",
                             "--sample-sweeps", "20", "--out", str(out))
    assert code == 0, err
    log = _log(out)
    assert log["model"] == {"class": "DeepBeliefNetwork", "layer_sizes": [64, 16, 8]}
    assert [r["layer"] for r in log["history"]] == [1, 2]
    assert 0 <= log["result"]["classifier"]["test_accuracy"] <= 1
    assert "classifier test accuracy" in stdout


def test_resume_with_other_settings_or_a_checkpoint_of_another_shape_fails_before_training(
        tmp_path, capsys):
    from kpp_sdk.models import RestrictedBoltzmannMachine, save_checkpoint

    first = tmp_path / "a"
    assert _run(capsys, "rbm", "--dataset", "bas", "--hidden", "4", "--epochs", "1",
                "--out", str(first))[0] == 0
    code, _, err = _run(capsys, "rbm", "--dataset", "bas", "--hidden", "5", "--epochs", "1",
                        "--resume", str(first / "checkpoint.pt"), "--out", str(tmp_path / "b"))
    assert code == 2
    assert "saved by a run with other settings: --hidden '4' (now '5')" in err
    assert not (tmp_path / "b").exists()
    # a checkpoint without a training state (saved from Python) gives the starting weights
    plain = save_checkpoint(tmp_path / "plain.pt", RestrictedBoltzmannMachine(9, 4))
    code, _, err = _run(capsys, "rbm", "--dataset", "bas", "--hidden", "5", "--epochs", "1",
                        "--resume", str(plain), "--out", str(tmp_path / "c"))
    assert code == 2
    assert "quadratic_coef has shape (9, 4) in the checkpoint and (9, 5)" in err
    assert not (tmp_path / "c").exists()
    code, _, err = _run(capsys, "rbm", "--dataset", "bas", "--hidden", "4", "--epochs", "1",
                        "--resume", str(plain), "--out", str(tmp_path / "d"))
    assert code == 0, err
    assert "holds no training state" in err


class _TinyDevice(Device):
    name = "test.tiny"
    OPTIONS: dict = {}

    @property
    def properties(self):
        return DeviceProperties(max_spins=100)

    def _run(self, problem, *, num_reads, seed, options, ctx):  # pragma: no cover - never reached
        raise AssertionError("no job may run for a model that does not fit")


def test_a_device_too_small_for_the_model_is_a_one_line_error_before_training(
        tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(kpp_sdk.registry, "get_device", lambda name, **kw: _TinyDevice())
    code, _, err = _run(capsys, "rbm", "--dataset", "digits", "--device", "test.tiny",
                        "--epochs", "1", "--out", str(tmp_path / "x"))
    assert code == 2
    assert err.strip().count("\n") == 0
    assert "needs 128 spins but test.tiny takes at most 100" in err
    assert not (tmp_path / "x").exists()


def test_unknown_device_dataset_and_bad_hidden_sizes_are_one_line_errors(tmp_path, capsys):
    for argv, message in [
        (["rbm", "--dataset", "bas", "--device", "no.such.device"], "no device named"),
        (["rbm", "--dataset", "imagenet"], "unknown data set"),
        (["rbm", "--dataset", "bas", "--hidden", "4,4"], "one number"),
        (["dbn", "--dataset", "bas", "--hidden", "4,x"], "integers"),
    ]:
        code, _, err = _run(capsys, *argv, "--epochs", "1", "--out", str(tmp_path / "x"))
        assert code == 2 and message in err, (argv, err)


def test_the_cli_module_does_not_import_torch_or_matplotlib():
    code = ("import sys, kpp_sdk.cli, kpp_sdk.models.cli; kpp_sdk.cli.build_parser(); "
            "print(sorted(m for m in ('torch', 'matplotlib', 'sklearn') if m in sys.modules))")
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert res.stdout.strip() == "[]"


def test_the_checkpoint_written_by_kpp_train_loads_into_the_same_model(tmp_path, capsys):
    from kpp_sdk.models import RestrictedBoltzmannMachine, load_checkpoint

    assert _run(capsys, "rbm", "--dataset", "bas", "--hidden", "6", "--epochs", "1",
                "--out", str(tmp_path))[0] == 0
    model, extra = load_checkpoint(tmp_path / "checkpoint.pt")
    assert isinstance(model, RestrictedBoltzmannMachine) and model.num_hidden == 6
    assert extra["dataset"] == "bas-3x3"
    assert np.isfinite(model.quadratic_coef.detach().numpy()).all()


def test_train_qgan_with_a_boltzmann_prior_on_sa_cpu_writes_samples_and_metrics(tmp_path, capsys):
    out = tmp_path / "qgan"
    code, stdout, err = _run(capsys, "qgan", "--device", "sa.cpu", "--steps", "6",
                             "--batch-size", "16", "--latent", "6", "--hidden", "4",
                             "--out", str(out))
    assert code == 0, err
    assert (out / "samples.png").read_bytes()[:8] == PNG
    log = _log(out)
    assert log["model"]["prior"] == "BoltzmannPrior" and log["model"]["latent_dim"] == 6
    assert log["device"]["name"] == "sa.cpu"
    q = log["result"]["sample_quality"]
    assert q["sample_to_data_distance"] > 0 and 1 <= q["class_coverage"] <= 10
    # every metric printed with its name spelled out and what it means (no bare "nn_precision")
    assert "sample -> nearest held-out digit" in stdout and "lower: samples look like" in stdout
    assert "classifier score" in stdout and "nn_precision" not in stdout
    samples = np.load(out / "samples.npy")
    assert samples.shape == (100, 64) and samples.min() >= 0 and samples.max() <= 1


def test_train_qdiffusion_reports_both_perplexity_bounds_and_samples(tmp_path, capsys):
    out = tmp_path / "qd"
    code, stdout, err = _run(capsys, "qdiffusion", "--steps", "5", "--energy-steps", "3",
                             "--seq-len", "8", "--hidden", "32", "--batch-size", "16",
                             "--eval-sequences", "16", "--eval-samples", "4", "--out", str(out))
    assert code == 0, err
    log = _log(out)
    b = log["result"]["perplexity_bound"]
    # an untrained 39-symbol model: the proposal's bound is near the uniform perplexity
    assert 20 < b["without_energy"]["perplexity"] < 60
    assert b["with_energy"]["perplexity"] > 1
    text = (out / "samples.txt").read_text()
    assert "## with the energy" in text and "## the proposal alone" in text
    from kpp_sdk import IsingProblem

    assert IsingProblem.load(out / "energy_ising.npz").n == 8 * 39
    assert "perplexity bound with energy" in stdout


def test_generative_models_reject_bad_options_before_training(tmp_path, capsys):
    for argv, message in [
        (["qgan", "--dataset", "bas"], "digits only"),
        (["qdiffusion", "--seq-len", "4", "--reverse-steps", "5"], "cannot exceed"),
        (["qdiffusion", "--dataset", "war-and-peace"], "unknown corpus"),
        (["qgan", "--device", "no.such.device"], "no device named"),
    ]:
        code, _, err = _run(capsys, *argv, "--steps", "1", "--out", str(tmp_path / "x"))
        assert code == 2 and message in err, (argv, err)
        assert not (tmp_path / "x").exists()


class _Bar:
    """A tqdm-like object recording what fit shows."""

    def __init__(self):
        self.labels, self.updates = [], 0

    def set_description(self, text, refresh=True):
        self.labels.append(text)

    def update(self, n):
        self.updates += n

    def set_postfix(self, *a, **k):
        pass


def test_the_progress_bar_names_the_epoch_and_the_dbn_layer():
    import torch
    from kpp_sdk.models import DeepBeliefNetwork, RestrictedBoltzmannMachine, fit, fit_dbn
    from kpp_sdk.models.datasets import load_dataset
    from kpp_sdk.models.samplers import PersistentContrastiveDivergence

    data = torch.as_tensor(load_dataset("bas").train)
    bar = _Bar()
    fit(RestrictedBoltzmannMachine(9, 3), data, PersistentContrastiveDivergence(seed=0),
        epochs=3, batch_size=5, progress=bar)
    assert bar.labels == ["epoch 1/3", "epoch 2/3", "epoch 3/3"] and bar.updates == 9
    bar = _Bar()
    fit_dbn(DeepBeliefNetwork([9, 4, 3]), data, PersistentContrastiveDivergence(seed=0),
            epochs=2, batch_size=7, progress=bar)
    assert bar.labels == ["layer 1/2, epoch 1/2", "layer 1/2, epoch 2/2",
                          "layer 2/2, epoch 1/2", "layer 2/2, epoch 2/2"]


def test_the_compile_notice_shows_when_numba_compiles_and_only_then(capfd):
    import numba
    from kpp_sdk.models.cli import _compile_notice

    def fresh():  # a function numba has not seen: calling it compiles
        return numba.njit(cache=False)(lambda x: x + 1)

    with _compile_notice() as started:
        fresh()(1)
    assert started and "compiling kernels (first run only)" in capfd.readouterr().err
    f = fresh()
    f(1)  # compiled before the notice is watching
    with _compile_notice() as started:
        f(2)
    assert not started and "compiling" not in capfd.readouterr().err


def test_the_final_samples_are_drawn_at_the_temperature_learned_in_training():
    """The thermostat's knob (cim.emulator) and the running beta carry over to the sampler that
    draws samples.png; drawn at knob 0 the emulator's samples collapse onto a few modes."""
    from kpp_sdk.models.cli import _device_sampler, _generation_sampler, _train_parser

    args = _train_parser().parse_args(["rbm", "--device", "cim.emulator"])
    device = kpp_sdk.registry.get_device("cim.emulator")
    trained = _device_sampler(args, device, 20, sweeps=1, seed=0)
    assert trained.thermostat
    trained.knob, trained.beta = 0.31, 0.9
    final = _generation_sampler(args, device, trained)
    assert final is not trained and final.num_reads == 100
    assert (final.knob, final.beta) == (0.31, 0.9)


def test_devices_without_a_sampling_mode_get_the_hybrid_by_default():
    from kpp_sdk.models.cli import HYBRID_GIBBS_STEPS, _device_sampler, _train_parser

    parser = _train_parser()
    for argv, name, steps in ((["rbm"], "cim.emulator", HYBRID_GIBBS_STEPS),
                              (["rbm"], "sa.cpu", 0),
                              (["rbm", "--gibbs-steps", "0"], "cim.emulator", 0),
                              (["rbm", "--gibbs-steps", "2"], "sa.cpu", 2)):
        args = parser.parse_args(argv)
        s = _device_sampler(args, kpp_sdk.registry.get_device(name), 20, sweeps=1, seed=0)
        assert s.gibbs_steps == steps, (argv, name)
        assert ("hybrid" in repr(s)) == bool(steps)


@pytest.mark.slow
def test_the_readme_main_job_meets_its_goals(tmp_path, capsys):
    """README command 1 (issue 16): 100 samples drawn through the emulator are varied and
    recognisable digits, and the test log-likelihood is at least CD-1's with the same epochs
    (within its 3-sigma AIS error)."""
    runs = {}
    for sampler in ("device", "cd"):
        out = tmp_path / sampler
        code, _, err = _run(capsys, "rbm", "--dataset", "digits", "--device", "cim.emulator",
                            "--epochs", "5", "--sampler", sampler, "--out", str(out))
        assert code == 0, err
        runs[sampler] = _log(out)["result"]
    q = runs["device"]["sample_quality"]
    assert "hybrid" in q["drawn_by"]
    assert q["classes"] >= 8 and q["distinct_samples"] >= 80 and q["confidence"] >= 0.7
    dev, cd = runs["device"], runs["cd"]
    err = 3 * (dev["final_log_likelihood_stderr"] + cd["final_log_likelihood_stderr"])
    assert dev["final_test_log_likelihood"] >= cd["final_test_log_likelihood"] - err


def test_bad_hybrid_and_topk_settings_fail_before_training(tmp_path, capsys):
    for argv, message in [
        (["--gibbs-steps", "-1"], "--gibbs-steps must be 0 or more"),
        (["--topk-runs", "50"], "--topk-runs must be at least 100"),
        (["--topk-runs", "200", "--device", "sa.cpu"], "output='topk'"),
        (["--topk-runs", "200", "--num-reads", "300"], "topk_runs >= num_reads"),
    ]:
        argv = ["rbm", "--device", "cim.emulator", *argv, "--epochs", "1"]
        code, _, err = _run(capsys, *argv, "--out", str(tmp_path / "x"))
        assert code == 2 and message in err, (argv, err)
        assert not (tmp_path / "x").exists()
