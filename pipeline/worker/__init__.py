"""Provider workers: claim items, call providers under limits, write results.

One async Ray actor per provider (times ``WORKER_REPLICAS``) serves all
that provider's models. The classes here are plain Python taking their
collaborators in ``__init__``, and none imports Ray: the Ray boundary
(builder, handles, supervisor, runtime, metrics export) is
:mod:`pipeline.cluster`.
"""
