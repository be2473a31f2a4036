"""kpp_sdk.devices."""
