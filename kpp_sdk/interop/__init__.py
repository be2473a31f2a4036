"""Bridges to other ecosystems (dimod); each imports its library lazily."""
