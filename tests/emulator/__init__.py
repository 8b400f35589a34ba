"""Tests of abeja_runtime.emulator."""
