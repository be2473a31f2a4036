"""A stand-in for QBoson's Kaiwu SDK (``kaiwu``), running on this SDK's devices, offline.

Scripts written against the Kaiwu SDK run after changing ``import kaiwu as kw`` into
``import kpp_sdk.kaiwu as kw`` (and ``from kaiwu.cim import ...`` into
``from kpp_sdk.kaiwu.cim import ...``):

* :class:`kw.classical.SimulatedAnnealingOptimizer <kpp_sdk.kaiwu.classical.SimulatedAnnealingOptimizer>`
  runs on ``sa.cpu``;
* :class:`kw.cim.CIMOptimizer <kpp_sdk.kaiwu.cim.CIMOptimizer>` runs on ``cim.emulator`` with the
  cloud machine's limits (550 spins, 8-bit integer couplings: checked, as the machine does);
* :class:`kw.cim.PrecisionReducer <kpp_sdk.kaiwu.cim.PrecisionReducer>` (also in
  ``kw.preprocess``) rounds a matrix to the machine's precision;
* ``kw.common`` (``CheckpointManager.save_dir``, ``set_log_level``) and ``kw.license.init``
  exist so the scripts' set-up lines run.

Every optimizer takes the Kaiwu matrix (``(N+1) x (N+1)``, energy ``-s^T M s`` with an ancilla
spin carrying the fields; :meth:`kpp_sdk.IsingProblem.from_kaiwu`) and returns ``(k, N+1)`` spins.
What is taken from Kaiwu's documentation and what is assumed is said in each class's docstring
("Source" / "Assumption"); ``docs/migrating-from-kaiwu.md`` lists it in one place. No license,
account or network is needed: nothing leaves the machine.
"""

from . import cim, classical, common, license, preprocess

__all__ = ["cim", "classical", "common", "license", "preprocess"]
