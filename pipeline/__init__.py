"""The pipeline: settings, storage, domain services and workers."""
