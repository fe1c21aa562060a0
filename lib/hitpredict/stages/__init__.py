"""Pipeline stages: each reads Delta tables, does its work through Spark, appends to tables.

Every stage is idempotent (a rerun does only what is missing) and returns a
:class:`~hitpredict.stages.base.StageReport`.
"""
