"""Tests of abeja_runtime.api."""
