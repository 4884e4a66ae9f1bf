"""The Airflow Assets shelfguard's DAGs exchange, defined once.

``catalog_refresh`` publishes the marts only after every data gate passed;
``search_model_retraining`` is scheduled on them. The URIs name the logical
tables, not a connection: the same Assets hold on DuckDB and on PostgreSQL.
"""

from __future__ import annotations

from airflow.sdk import Asset

GROUP = "shelfguard"


def _mart(name: str) -> Asset:
    return Asset(
        name=f"shelfguard.marts.{name}", uri=f"shelfguard://warehouse/marts/{name}", group=GROUP
    )


DIM_PRODUCTS = _mart("dim_products")
FCT_TRAINING_PAIRS = _mart("fct_training_pairs")
FCT_GOLDEN_JUDGEMENTS = _mart("fct_golden_judgements")

#: What a successful ``catalog_refresh`` publishes and retraining waits for.
MARTS: tuple[Asset, ...] = (DIM_PRODUCTS, FCT_TRAINING_PAIRS, FCT_GOLDEN_JUDGEMENTS)
