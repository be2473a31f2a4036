"""kpp_sdk.emulator: physics and timing of a measurement-feedback CIM."""
