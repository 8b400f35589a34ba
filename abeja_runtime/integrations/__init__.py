"""One-line statistics reporting for the training frameworks people already use.

Each integration is a thin adapter over :class:`~abeja_runtime.statistics.reporter.StatisticsReporter`
(it does no HTTP of its own, so throttling, retries, rank-0-only posting and the exit
flush are the reporter's) and lives in its own module, which imports its framework.
Import the one you need:

* :mod:`abeja_runtime.integrations.keras`: ``StatisticsCallback`` for ``model.fit``
  (Keras 3);
* :mod:`abeja_runtime.integrations.torch`: ``track(loader, epoch=..., num_epochs=...)``
  and ``epoch_end(...)`` for a plain PyTorch loop (no framework import at all: tensors
  are passed through, never read on the training thread);
* :mod:`abeja_runtime.integrations.lightning`: ``StatisticsCallback`` for
  ``lightning.pytorch`` (``PytorchLightningStatisticsCallback`` for the older
  ``pytorch_lightning`` package);
* :mod:`abeja_runtime.integrations.transformers`: ``StatisticsCallback``, a Hugging Face
  ``TrainerCallback``.

Conventions shared by all of them, so that every framework's job looks alike on the
platform:

* ``epoch`` in the statistics is 1-based: the number of the epoch in progress, and at an
  epoch end the number of epochs completed (the platform's samples report
  ``epoch + 1`` from Keras' 0-based index). The last document therefore has
  ``epoch == num_epochs`` and ``progress_percentage == 1.0``.
* Validation metrics (Keras ``val_*``, Lightning ``val_*``/``val/*``, Transformers
  ``eval_*``) go to the ``validation`` stage with the prefix removed; the others go to the
  ``train`` stage. Every metric keeps its name; when a stage has exactly one accuracy-like
  metric (``acc``, ``sparse_categorical_accuracy``, ...) and none named ``accuracy``, it is
  also reported as ``accuracy``, the name the platform charts.
* Epoch ends are must-deliver snapshots (``epoch_end=True``); step-level progress is
  throttled by the integration itself, so that a step costs a clock read.
* A reporting problem (an odd metric value, a misconfigured reporter) is logged once and
  never breaks training; processes other than global rank 0 skip all the work.

This package imports no framework: importing it is free.
"""

from __future__ import annotations

__all__: list[str] = []
