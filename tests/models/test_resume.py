"""Training you can interrupt: every loop stops at a batch (step) boundary, hands over its
complete state, and a run resumed from a checkpoint file gives, weight for weight, the result
of a run that never stopped; ``kpp train`` does it on a real Ctrl-C."""

import itertools
import json
import os
import shlex
import signal
import stat
import subprocess
import sys
import time

import numpy as np
import pytest
import torch
from kpp_sdk.models import (
    BoltzmannMachine,
    DeepBeliefNetwork,
    RestrictedBoltzmannMachine,
    TrainingInterrupted,
    fit,
    fit_dbn,
    load_checkpoint,
    load_training_state,
    make_optimizer,
    save_checkpoint,
)
from kpp_sdk.models.datasets import load_dataset
from kpp_sdk.models.samplers import (
    BoltzmannSampler,
    ContrastiveDivergence,
    PersistentContrastiveDivergence,
)

BAS = torch.as_tensor(load_dataset("bas").train)


def _stop_after(n):
    """A ``stop()`` that says stop at its ``n``-th call (the n-th batch boundary, from 0)."""
    calls = itertools.count()
    return lambda: next(calls) >= n


def _untimed(x):
    """``x`` without measured times (``seconds``, ``*_s``): everything else must be equal."""
    if isinstance(x, dict):
        return {k: _untimed(v) for k, v in x.items() if k != "seconds" and not k.endswith("_s")}
    if isinstance(x, list):
        return [_untimed(v) for v in x]
    return x


def _without_time(rows):
    return _untimed(rows)


def _same_weights(a, b):
    sa, sb = a.state_dict(), b.state_dict()
    assert sa.keys() == sb.keys()
    for k in sa:
        assert torch.equal(sa[k], sb[k]), k


SAMPLERS = {
    "cd": lambda: ContrastiveDivergence(1, seed=3),
    "pcd": lambda: PersistentContrastiveDivergence(1, num_chains=7, seed=3),
    "sa.cpu": lambda: BoltzmannSampler("sa.cpu", num_reads=7, num_sweeps=2, seed=3),
    "cim.emulator": lambda: BoltzmannSampler("cim.emulator", num_reads=7, seed=3,
                                             round_trips=120),
}


def _rbm():
    return RestrictedBoltzmannMachine(9, 5, generator=torch.Generator().manual_seed(1))


def _fit(model, sampler, **kw):
    opt = make_optimizer(model, lr=0.1, momentum=0.5, weight_decay=1e-4)
    return fit(model, BAS, sampler, epochs=3, batch_size=4, optimizer=opt, seed=5, **kw)


@pytest.mark.parametrize("name", SAMPLERS)
@pytest.mark.parametrize("stop_at", [6, 8])  # inside epoch 2 (batch 2 of 4), at its end
def test_fit_stopped_and_resumed_from_the_file_equals_an_uninterrupted_run(tmp_path, name,
                                                                           stop_at):
    straight = _rbm()
    expected = _fit(straight, SAMPLERS[name]())

    stopped, path, saves = _rbm(), tmp_path / "ckpt.pt", []

    def save(state):
        saves.append(state["epoch"])
        save_checkpoint(path, stopped, training=state)

    with pytest.raises(TrainingInterrupted) as info:
        _fit(stopped, SAMPLERS[name](), on_checkpoint=save, stop=_stop_after(stop_at))
    assert (info.value.epoch, info.value.batch) == divmod(stop_at, 4)
    assert saves == [1] + [stop_at // 4] * (stop_at % 4 == 0) + [stop_at // 4]

    resumed, _ = load_checkpoint(path, _rbm())  # a fresh process would do exactly this
    history = _fit(resumed, SAMPLERS[name](), state=load_training_state(path))
    _same_weights(resumed, straight)
    assert _without_time(history) == _without_time(expected)


def test_resuming_with_another_batch_size_or_state_kind_is_refused(tmp_path):
    from kpp_sdk.models import CheckpointError

    model, states = _rbm(), []
    with pytest.raises(TrainingInterrupted):
        _fit(model, SAMPLERS["pcd"](), on_checkpoint=states.append, stop=_stop_after(2))
    with pytest.raises(CheckpointError, match="batch_size=4, this run has batch_size=5"):
        fit(model, BAS, SAMPLERS["pcd"](), epochs=3, batch_size=5, state=states[-1])
    with pytest.raises(CheckpointError, match="not a fit state"):
        fit(model, BAS, SAMPLERS["pcd"](), epochs=3, batch_size=4, state={"kind": "qgan"})


def test_a_finished_run_resumed_with_more_epochs_equals_the_longer_run():
    longer = _rbm()
    opt = make_optimizer(longer, lr=0.1)
    expected = fit(longer, BAS, SAMPLERS["sa.cpu"](), epochs=4, batch_size=4, optimizer=opt)
    short, states = _rbm(), []
    opt = make_optimizer(short, lr=0.1)
    sampler = SAMPLERS["sa.cpu"]()
    fit(short, BAS, sampler, epochs=2, batch_size=4, optimizer=opt, on_checkpoint=states.append)
    opt = make_optimizer(short, lr=0.1)
    history = fit(short, BAS, SAMPLERS["sa.cpu"](), epochs=4, batch_size=4, optimizer=opt,
                  state=states[-1])
    _same_weights(short, longer)
    assert _without_time(history) == _without_time(expected)


def test_a_bm_with_clamped_sampling_resumes_exactly():
    def bm():
        return BoltzmannMachine(9, 2, generator=torch.Generator().manual_seed(2))

    def sampler():
        return BoltzmannSampler("sa.cpu", num_reads=5, num_sweeps=2, seed=4)

    straight = bm()
    fit(straight, BAS, sampler(), epochs=2, batch_size=5, lr=0.1)
    stopped, states = bm(), []
    with pytest.raises(TrainingInterrupted):
        fit(stopped, BAS, sampler(), epochs=2, batch_size=5, lr=0.1,
            on_checkpoint=states.append, stop=_stop_after(4))
    fit(stopped, BAS, sampler(), epochs=2, batch_size=5, lr=0.1, state=states[-1])
    _same_weights(stopped, straight)


def test_fit_dbn_stopped_in_its_second_layer_resumes_exactly(tmp_path):
    def dbn():
        return DeepBeliefNetwork([9, 6, 4], generator=torch.Generator().manual_seed(0))

    def sampler():
        return BoltzmannSampler("sa.cpu", num_reads=6, num_sweeps=2, seed=2)

    kw = {"epochs": 2, "batch_size": 4, "lr": 0.1, "seed": 1}
    straight = dbn()
    expected = fit_dbn(straight, BAS, sampler(), **kw)
    stopped, path = dbn(), tmp_path / "dbn.pt"
    with pytest.raises(TrainingInterrupted):  # 8 batches in layer 1, then 3 in layer 2
        fit_dbn(stopped, BAS, sampler(), **kw, stop=_stop_after(11),
                on_checkpoint=lambda st: save_checkpoint(path, stopped, training=st))
    state = load_training_state(path)
    assert state["layer"] == 1 and (state["fit"]["epoch"], state["fit"]["batch"]) == (0, 3)
    resumed, _ = load_checkpoint(path, dbn())
    histories = fit_dbn(resumed, BAS, sampler(), **kw, state=state)
    _same_weights(resumed, straight)
    assert [_without_time(h) for h in histories] == [_without_time(h) for h in expected]


def test_qgan_with_a_device_prior_resumes_exactly(tmp_path):
    pytest.importorskip("sklearn")
    from kpp_sdk.models.qgan import QGAN, fit_qgan, load_digits_grayscale, make_prior

    train = load_digits_grayscale()[0][:200]

    def gan():
        torch.manual_seed(0)
        prior = make_prior("boltzmann", 6, num_hidden=4,
                           sampler=BoltzmannSampler("sa.cpu", num_reads=8, num_sweeps=1, seed=0),
                           generator=torch.Generator().manual_seed(0))
        return QGAN(prior, hidden=16)

    kw = {"steps": 12, "batch_size": 8, "log_every": 5, "seed": 3}
    straight = gan()
    expected = fit_qgan(straight, train, **kw)
    stopped, path = gan(), tmp_path / "qgan.pt"
    with pytest.raises(TrainingInterrupted):
        fit_qgan(stopped, train, **kw, stop=_stop_after(7),
                 on_checkpoint=lambda st: save_checkpoint(path, stopped, training=st))
    assert load_training_state(path)["step"] == 7
    resumed, _ = load_checkpoint(path, gan())
    history = fit_qgan(resumed, train, **kw, state=load_training_state(path))
    _same_weights(resumed, straight)
    assert _without_time(history) == _without_time(expected)


def test_qdiffusion_both_phases_resume_exactly(tmp_path):
    from kpp_sdk.models.qdiffusion import QDiffusion, fit_diffusion, fit_energy, load_text_corpus

    corpus = load_text_corpus("toy", text="the cat sat on the mat. " * 50)

    def model():
        torch.manual_seed(0)  # the biases' initialisation uses the global stream
        return QDiffusion(6, corpus.tokenizer.vocab_size, hidden=8, num_layers=1,
                          generator=torch.Generator().manual_seed(0))

    straight = model()
    exp_mu = fit_diffusion(straight, corpus, steps=9, batch_size=8, log_every=4)
    exp_e = fit_energy(straight, corpus, steps=7, batch_size=8, log_every=3)
    for phase, stop_at in (("diffusion", 5), ("energy", 4)):
        stopped, path = model(), tmp_path / f"{phase}.pt"

        def save(st, m=stopped, p=path):
            save_checkpoint(p, m, training=st)

        if phase == "energy":
            fit_diffusion(stopped, corpus, steps=9, batch_size=8, log_every=4)
        fits = {"diffusion": lambda m, **k: fit_diffusion(m, corpus, steps=9, batch_size=8,
                                                          log_every=4, **k),
                "energy": lambda m, **k: fit_energy(m, corpus, steps=7, batch_size=8,
                                                    log_every=3, **k)}
        with pytest.raises(TrainingInterrupted):
            fits[phase](stopped, on_checkpoint=save, stop=_stop_after(stop_at))
        resumed, _ = load_checkpoint(path)  # QDiffusion rebuilds from its configuration
        history = fits[phase](resumed, state=load_training_state(path))
        assert _without_time(history) == _without_time(exp_mu if phase == "diffusion" else exp_e)
        if phase == "diffusion":
            fit_energy(resumed, corpus, steps=7, batch_size=8, log_every=3)
        _same_weights(resumed, straight)


def test_a_checkpoint_write_killed_midway_leaves_the_previous_one_intact(tmp_path, monkeypatch):
    from kpp_sdk.models.qgan import QGAN, GaussianPrior

    gan = QGAN(GaussianPrior(4), hidden=8)
    path = save_checkpoint(tmp_path / "checkpoint.pt", gan, extra={"step": 1})
    before = path.read_bytes()
    real_save = torch.save

    def killed(obj, f, *a, **k):
        real_save(obj, f, *a, **k)
        f.truncate(100)  # half a file on disk, then the process dies
        raise KeyboardInterrupt

    monkeypatch.setattr(torch, "save", killed)
    with torch.no_grad():
        gan.generator[0].weight.add_(1.0)
    with pytest.raises(KeyboardInterrupt):
        save_checkpoint(path, gan, extra={"step": 2})
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["checkpoint.pt"]  # no temporary left
    _, extra = load_checkpoint(path, QGAN(GaussianPrior(4), hidden=8))
    assert extra == {"step": 1}


def test_checkpoints_have_the_usual_file_mode(tmp_path):
    umask = os.umask(0)
    os.umask(umask)
    path = save_checkpoint(tmp_path / "m.pt", _rbm())
    assert stat.S_IMODE(path.stat().st_mode) == 0o666 & ~umask != 0o600


# --- kpp train -------------------------------------------------------------------------------

TRAIN = ["train", "rbm", "--dataset", "bas", "--hidden", "4", "--batch-size", "2",
         "--epochs", "50", "--eval", "none", "--sample-sweeps", "5", "--seed", "7"]


def _run_log(folder):
    return _untimed(json.loads((folder / "log.json").read_text())["history"])


def test_ctrl_c_saves_a_checkpoint_exits_130_and_the_printed_command_resumes_exactly(
        tmp_path, capsys):
    from kpp_sdk.cli import main

    straight = tmp_path / "straight"
    assert main(TRAIN + ["--out", str(straight), "--no-progress"]) == 0

    out = tmp_path / "stopped"
    proc = subprocess.Popen(  # a real process gets a real SIGINT
        [sys.executable, "-c", "import sys; from kpp_sdk.cli import main; sys.exit(main())",
         *TRAIN, "--out", str(out)], cwd=tmp_path, text=True, stdout=subprocess.PIPE,
        stderr=subprocess.PIPE)
    deadline = time.monotonic() + 120
    while not (out / "checkpoint.pt").exists():  # the first epoch is done
        assert proc.poll() is None and time.monotonic() < deadline, proc.communicate()
        time.sleep(0.005)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err
    assert "Ctrl-C: stopping after this batch" in err and "resume with:" in err
    state = load_training_state(out / "checkpoint.pt")
    assert state["loop"]["epoch"] < 50  # it stopped early ...
    assert not (out / "log.json").exists()  # ... before the end of the run

    command = shlex.split(err.strip().splitlines()[-1])
    assert command[:2] == ["kpp", "train"]
    assert command[-2:] == ["--resume", str(out / "checkpoint.pt")]
    capsys.readouterr()
    assert main(command[1:] + ["--no-progress"]) == 0, capsys.readouterr().err
    a, _ = load_checkpoint(straight / "checkpoint.pt")
    b, extra = load_checkpoint(out / "checkpoint.pt")
    _same_weights(a, b)
    assert extra["complete"] is True
    assert _run_log(out) == _run_log(straight)
    assert np.array_equal(np.load(out / "samples.npy"), np.load(straight / "samples.npy"))


def test_the_log_holds_plain_settings_and_the_samples_behind_the_figure(tmp_path):
    from kpp_sdk.cli import main

    assert main(["train", "rbm", "--dataset", "digits", "--hidden", "8", "--epochs", "1",
                 "--eval", "none", "--sample-sweeps", "20", "--no-progress",
                 "--out", str(tmp_path)]) == 0
    log = json.loads((tmp_path / "log.json").read_text())
    assert "func" not in log["args"] and "command" not in log["args"]
    assert log["args"]["hidden"] == "8" and log["files"]["samples_array"] == "samples.npy"
    samples = np.load(tmp_path / "samples.npy")
    assert samples.shape == (100, 64) and set(np.unique(samples)) <= {0.0, 1.0}
    q = log["result"]["sample_quality"]
    assert q["num_samples"] == 100
    assert q["distinct_samples"] == len(np.unique(samples, axis=0))
    assert 1 <= q["classes"] <= 10 and 0.1 <= q["confidence"] <= 1
    # the reference: real held-out digits are confidently classified, in every class
    assert q["held_out_classes"] == 10 and q["held_out_confidence"] > 0.75
    assert q["classifier_test_accuracy"] > 0.85


def test_a_finished_kpp_train_run_resumed_with_more_epochs_equals_the_longer_run(tmp_path,
                                                                                capsys):
    from kpp_sdk.cli import main

    base = ["train", "rbm", "--dataset", "bas", "--hidden", "4", "--batch-size", "5",
            "--sample-sweeps", "5", "--no-progress"]
    assert main(base + ["--epochs", "4", "--out", str(tmp_path / "long")]) == 0
    assert main(base + ["--epochs", "2", "--out", str(tmp_path / "short")]) == 0
    assert main(base + ["--epochs", "4", "--out", str(tmp_path / "short"),
                        "--resume", str(tmp_path / "short" / "checkpoint.pt")]) == 0
    a, _ = load_checkpoint(tmp_path / "long" / "checkpoint.pt")
    b, _ = load_checkpoint(tmp_path / "short" / "checkpoint.pt")
    _same_weights(a, b)
    assert _run_log(tmp_path / "short") == _run_log(tmp_path / "long")
    assert [r["epoch"] for r in _run_log(tmp_path / "long")] == [0, 1, 2, 3, 4]
    capsys.readouterr()
    # other settings are refused, naming them, before any work
    assert main(base + ["--epochs", "5", "--lr", "0.2", "--out", str(tmp_path / "other"),
                        "--resume", str(tmp_path / "short" / "checkpoint.pt")]) == 2
    assert "--lr 0.1 (now 0.2)" in capsys.readouterr().err  # rbm default lr 0.1
    assert not (tmp_path / "other").exists()
