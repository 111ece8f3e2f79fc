"""Helpers shared by the tests, make bench and make demo."""
