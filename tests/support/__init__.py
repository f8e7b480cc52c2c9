"""Shared test helpers: one copy of each, imported by the test files."""
