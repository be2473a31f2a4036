"""The CIM emulator side by side with what it emulates: ``kpp emulate`` (:mod:`.cli`)."""
