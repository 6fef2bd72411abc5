"""Helpers the test suite builds on: generated models, fakes and harnesses."""
