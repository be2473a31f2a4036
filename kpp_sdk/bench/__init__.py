"""Benchmarks of every registered device against the peer solvers from PyPI, on the same
instances in one run: :mod:`.suite` (instances, solvers, metrics, reports) and :mod:`.cli`
(``kpp bench``)."""
