"""Adapters from public datasets into the input contract."""
