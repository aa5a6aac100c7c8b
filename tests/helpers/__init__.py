"""Helpers that several test files share (fixtures live in tests/conftest.py)."""
