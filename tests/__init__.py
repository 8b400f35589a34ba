"""The test suite: one folder per wing of the package, helpers in :mod:`tests.support`."""
