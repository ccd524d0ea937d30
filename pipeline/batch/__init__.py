"""Offline batches: a JSON lines file run as jobs, results as JSON lines.

::

    from pipeline.batch import run_batch

    result = run_batch("requests.jsonl", "results.jsonl")

The input holds OpenAI Batch requests or the project's own job items;
the output holds OpenAI Batch output lines. See :mod:`pipeline.batch.api`.
"""

from pipeline.batch.api import cancel_batch, run_batch
from pipeline.batch.records import BatchOptions, BatchResult, Progress

__all__ = [
    "BatchOptions",
    "BatchResult",
    "Progress",
    "cancel_batch",
    "run_batch",
]
