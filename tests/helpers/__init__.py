"""Shared, importable helpers for the test suite (synthetic media, small fixtures)."""
