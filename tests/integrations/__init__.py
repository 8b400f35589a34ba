"""Tests of abeja_runtime.integrations."""
