"""The Ray boundary: the worker classes as named actors, and how to reach them.

* :mod:`~pipeline.cluster.builder`: the one place that makes Ray actors
  of the plain worker classes (:mod:`pipeline.worker`);
* :mod:`~pipeline.cluster.handles`: the API's side (notify, ask, check);
* :mod:`~pipeline.cluster.supervisor`: keeps the actors alive;
* :mod:`~pipeline.cluster.rollout`: a deploy of new code retires the
  actors of the old (drain, hand-over);
* :mod:`~pipeline.cluster.metrics`: the worker's metrics as Ray metrics;
* :mod:`~pipeline.cluster.runtime`: starting Ray locally, offline.
"""
