"""Bundled model recipes (TOML), installed as irkit.models."""
