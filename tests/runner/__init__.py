"""Tests of abeja_runtime.runner."""
