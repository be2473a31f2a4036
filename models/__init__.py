"""kpp_sdk.models."""
