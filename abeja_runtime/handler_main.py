"""``python -m abeja_runtime.handler_main``: the old path of the handler's process.

Kept because the README documented it before the package moved into wings; the code is
:mod:`abeja_runtime.runner.child` (``python -m abeja_runtime.runner.child``). Importing
this module loads nothing: the runner is reached only when it runs as ``__main__``, so
the core level of the package still imports nothing above it.
"""

from __future__ import annotations

if __name__ == "__main__":
    import runpy

    runpy.run_module("abeja_runtime.runner.child", run_name="__main__", alter_sys=True)
