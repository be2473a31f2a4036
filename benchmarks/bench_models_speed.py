"""RBM 64 x 64 on binarised 8x8 digits: test log-likelihood (AIS) after the same epochs, and the
wall time per epoch of each sampler relative to CD-1 (goal: device sampling <= 2x CD-1).

    pytest benchmarks/bench_models_speed.py --benchmark-only -s

(The sampler variants of issue 16, with KL and AIS tables: ``python benchmarks/bench_models.py``.)

Every method trains the same initial model (same seed, visible biases from the data) for
``EPOCHS`` epochs of SGD (batch 50, learning rate 0.1, momentum 0.5); the negative phase is
CD-1, PCD-1 (50 chains), ``sa.cpu`` in Boltzmann sampling mode (50 reads, persistent chains,
one sweep per job; ``sa.cpu x5``: five sweeps) or ``cim.emulator`` (BoltzmannSampler with
mode="auto": Boltzmann sampling if the device offers it, else its own dynamics with an
estimated effective temperature). Time per epoch is the median over epochs, measured in this
process; the ratio to CD-1 is the number to compare. ``test_time_per_epoch_vs_cd1_interleaved``
measures it again with CD-1 and the other sampler alternating epoch by epoch, which is robust to
load from other processes. Test log-likelihoods are AIS estimates (``AIS_BETAS`` temperatures,
``AIS_CHAINS`` chains, base rates from the training data) with a 3-sigma error bar.
"""

from __future__ import annotations

import statistics

import pytest

torch = pytest.importorskip("torch")

from kpp_sdk.models import RestrictedBoltzmannMachine, fit, log_likelihood  # noqa: E402
from kpp_sdk.models.datasets import load_dataset  # noqa: E402
from kpp_sdk.models.samplers import (  # noqa: E402
    BoltzmannSampler,
    ContrastiveDivergence,
    PersistentContrastiveDivergence,
)

import kpp_sdk  # noqa: E402

EPOCHS = 20
BATCH = 50
LR = 0.1
AIS_BETAS = 3000
AIS_CHAINS = 200
SEED = 0
ROUNDS = 7

_RESULTS: dict[str, dict] = {}


def _available(name: str) -> bool:
    return any(d.name == name for d in kpp_sdk.list_devices(available_only=True))


def _sampler(method: str):
    if method == "cd1":
        return ContrastiveDivergence(1, seed=SEED)
    if method == "pcd":
        return PersistentContrastiveDivergence(1, num_chains=BATCH, seed=SEED)
    if method.startswith("sa.cpu"):
        sweeps = 5 if method.endswith("x5") else 1
        return BoltzmannSampler("sa.cpu", num_reads=BATCH, num_sweeps=sweeps, num_threads=1,
                                seed=SEED)
    return BoltzmannSampler(method, num_reads=BATCH, seed=SEED)


@pytest.fixture(scope="module")
def digits():
    torch.set_num_threads(1)
    try:
        from threadpoolctl import threadpool_limits

        threadpool_limits(1)  # 128 x 128 products: threads only add hand-offs
    except ImportError:
        pass
    return load_dataset("digits", seed=SEED)


def _train(method: str, ds) -> dict:
    x = torch.as_tensor(ds.train)
    rbm = RestrictedBoltzmannMachine(64, 64, generator=torch.Generator().manual_seed(SEED))
    rbm.init_visible_bias(x)
    sampler = _sampler(method)
    history = fit(rbm, x, sampler, epochs=EPOCHS, batch_size=BATCH, lr=LR, momentum=0.5,
                  weight_decay=1e-4, seed=SEED)
    ll = log_likelihood(rbm, ds.test, method="ais", num_chains=AIS_CHAINS, num_betas=AIS_BETAS,
                        data=ds.train, seed=SEED)
    return {"method": method, "sampler": repr(sampler),
            "seconds_per_epoch": statistics.median(h["seconds"] for h in history),
            "test_log_likelihood": ll["log_likelihood"], "ais_stderr": ll["stderr"],
            "last_sampler_report": history[-1]["sampler"]}


@pytest.fixture(scope="module")
def cd1_reference(digits):
    if "cd1" not in _RESULTS:
        _RESULTS["cd1"] = _train("cd1", digits)
    return _RESULTS["cd1"]


@pytest.mark.parametrize("method", ["cd1", "pcd", "sa.cpu", "sa.cpu x5", "cim.emulator"])
def test_rbm_64x64_digits_loglik_and_time_per_epoch_vs_cd1(benchmark, method, digits,
                                                           cd1_reference):
    if "." in method and not _available(method.split()[0]):
        pytest.skip(f"{method} is not registered or not available on this machine")
    res = benchmark.pedantic(_train, args=(method, digits), rounds=1, iterations=1)
    _RESULTS[method] = res
    ratio = res["seconds_per_epoch"] / cd1_reference["seconds_per_epoch"]
    res["time_per_epoch_vs_cd1"] = ratio
    benchmark.extra_info.update({k: v for k, v in res.items() if k != "last_sampler_report"})
    benchmark.extra_info["epochs"] = EPOCHS
    print(f"\n{method:>13}: AIS test LL {res['test_log_likelihood']:8.3f} "
          f"± {3 * res['ais_stderr']:.3f} after {EPOCHS} epochs; "
          f"{res['seconds_per_epoch'] * 1e3:7.1f} ms/epoch = {ratio:4.2f} x CD-1"
          + ("  (goal <= 2x)" if "." in method else ""))


@pytest.mark.parametrize("method", ["pcd", "sa.cpu", "sa.cpu x5", "cim.emulator"])
def test_time_per_epoch_vs_cd1_interleaved(benchmark, method, digits):
    """The same ratio, measured with epochs of CD-1 and of ``method`` alternating (``ROUNDS``
    each, on two models trained side by side), so that load from other processes hits both
    alike; the median ratio is reported."""
    if "." in method and not _available(method.split()[0]):
        pytest.skip(f"{method} is not registered or not available on this machine")
    x = torch.as_tensor(digits.train)
    models, samplers = {}, {}
    for m in ("cd1", method):
        gen = torch.Generator().manual_seed(SEED)
        models[m] = RestrictedBoltzmannMachine(64, 64, generator=gen)
        models[m].init_visible_bias(x)
        samplers[m] = _sampler(m)
        fit(models[m], x, samplers[m], epochs=1, batch_size=BATCH, lr=LR, seed=SEED)  # warm-up
    times: dict[str, list[float]] = {"cd1": [], method: []}

    def rounds():
        for r in range(ROUNDS):
            for m in ("cd1", method):
                h = fit(models[m], x, samplers[m], epochs=1, batch_size=BATCH, lr=LR, seed=r)
                times[m].append(h[0]["seconds"])

    benchmark.pedantic(rounds, rounds=1, iterations=1)
    ratio = statistics.median(a / b for a, b in zip(times[method], times["cd1"], strict=True))
    benchmark.extra_info.update({"method": method, "rounds": ROUNDS,
                                 "median_seconds_per_epoch": statistics.median(times[method]),
                                 "median_cd1_seconds_per_epoch": statistics.median(times["cd1"]),
                                 "time_per_epoch_vs_cd1": ratio})
    print(f"\n{method:>13}: {statistics.median(times[method]) * 1e3:7.1f} ms/epoch vs CD-1 "
          f"{statistics.median(times['cd1']) * 1e3:6.1f} ms/epoch, interleaved: {ratio:4.2f} x CD-1"
          + ("  (goal <= 2x)" if "." in method else ""))
