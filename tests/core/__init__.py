"""Tests of the core modules: errors, config, job, jsonsafe, validators."""
