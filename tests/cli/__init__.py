"""Tests of the command line (abeja-runtime ...)."""
