"""Tests of abeja_runtime.statistics."""
