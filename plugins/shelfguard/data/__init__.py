"""The data room: the store's files, their landing in the warehouse and the published marts.

- :mod:`~shelfguard.data.wands`: the five files' contracts (names, columns, reason codes);
- :mod:`~shelfguard.data.generator`: the synthetic store, with its hidden ground truth;
- :mod:`~shelfguard.data.weeks`: the later weeks of a store (change feeds applied);
- :mod:`~shelfguard.data.ingest`: landing a batch in the raw tables, quarantine included;
- :mod:`~shelfguard.data.pseudonyms`: the keyed pseudonyms of user ids;
- :mod:`~shelfguard.data.dbt_project`: running the dbt project (environment, build, parse);
- :mod:`~shelfguard.data.publication`: write-audit-publish of the marts' snapshots;
- :mod:`~shelfguard.data.duckdb_wait`: waiting for the DuckDB file's single writer.

Nothing is imported here; import from the modules.
"""
