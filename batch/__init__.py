"""Batch scoring: a table scored by the model dvc.lock pins, on Dask, with the service's own
resolver, validator and graph (:mod:`batch.score`, :mod:`batch.rows`)."""
