"""Tests of abeja_runtime.artifacts."""
