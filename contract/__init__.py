"""The artifact contract shared by the pipeline (src/) and the service (api/).

Numpy and the standard library only, so a deploy host needs no pipeline packages: the schema
format (:mod:`contract.schema`), the preprocessing spec and its reader
(:mod:`contract.features`), the answer rule (:mod:`contract.labels`), the model zip with
its format version (:mod:`contract.artifact`) and the words a table spells missing with
(:mod:`contract.values`).
"""
