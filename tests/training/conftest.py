"""Fixtures for shelfguard_train: training inputs built from generated data, and a tiny BERT.

The real pipeline exports ``pairs.parquet``, ``products.parquet`` and ``golden.parquet``
from the dbt marts. ``build_training_inputs`` stands in for that export here: a short
DuckDB query over the generator's WANDS-layout files that follows the same rules
(k-anonymous queries, clicked pairs, strongest engagement as the grade, hash split).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from pathlib import Path

import duckdb
import pytest

from shelfguard.data.generator import generate

K_ANONYMITY = 5
VALIDATION_PERCENT = 10
TINY_PRODUCTS = 120
TINY_SEARCHES = 1500
TINY_SEED = 11

_READ = "read_csv('{path}', delim='\t', header=true, quote='', escape='', all_varchar=true)"

_SQL = """
create temp table log as
select
    lower(trim(regexp_replace(query, '\\s+', ' ', 'g'))) as query,
    cast(product_id as bigint) as product_id,
    user_id,
    cast(clicked as integer) = 1 as is_clicked,
    cast(added_to_cart as integer) = 1 as is_carted,
    cast(purchased as integer) = 1 as is_purchased
from {search_log};

create temp table catalog as
with latest_change as (
    select * from {changes}
    qualify row_number() over (
        partition by product_id order by cast(change_id as bigint) desc
    ) = 1
),
listed as (
    select
        product_id, product_name, product_class, category_hierarchy, product_description,
        product_features
    from {product}
    where product_id not in (select product_id from latest_change)
    union all
    select
        product_id, product_name, product_class, category_hierarchy, product_description,
        product_features
    from latest_change
    where op = 'upsert'
),
described as (
    select
        cast(product_id as bigint) as product_id,
        product_class,
        -- The same shape as dim_products.text_to_embed in the dbt project.
        concat_ws(
            '. ',
            product_name,
            product_class,
            concat_ws(
                ', ',
                'brand: ' || regexp_extract(product_features, 'brand:([^|]*)', 1),
                'color: ' || regexp_extract(product_features, 'color:([^|]*)', 1),
                'material: ' || regexp_extract(product_features, 'material:([^|]*)', 1)
            ),
            product_description
        ) as text_to_embed,
        trim(split_part(category_hierarchy, '/', 1)) as top_category
    from listed
)
select
    product_id,
    text_to_embed,
    product_class,
    sha256(text_to_embed) as content_hash,
    top_category
from described
order by product_id;

create temp table pairs as
with k_anonymous as (
    select query from log group by query having count(distinct user_id) >= {k}
),
aggregated as (
    select
        query,
        product_id,
        count(*) as impressions,
        count(*) filter (where is_clicked) as clicks,
        bool_or(is_carted) as carted,
        bool_or(is_purchased) as purchased
    from log
    where query in (select query from k_anonymous)
        and product_id in (select product_id from catalog)
    group by query, product_id
)
select
    query,
    product_id,
    case when purchased then 3 when carted then 2 else 1 end as grade,
    cast((case when purchased then 3 when carted then 2 else 1 end)
         * (1 + clicks / impressions) as double) as weight,
    case when md5_number(query) % 100 < {validation_percent} then 'validation' else 'train' end
        as split
from aggregated
where clicks > 0
order by query, product_id;

create temp table golden as
select
    cast(q.query_id as bigint) as query_id,
    lower(trim(regexp_replace(q.query, '\\s+', ' ', 'g'))) as query,
    q.query_class,
    cast(l.product_id as bigint) as product_id,
    case l.label when 'Exact' then 2 when 'Partial' then 1 else 0 end as grade
from {label} as l
inner join {query} as q on l.query_id = q.query_id
where cast(l.product_id as bigint) in (select product_id from catalog)
order by query_id, product_id;
"""


def build_training_inputs(wands_dir: Path, out_dir: Path, k: int = K_ANONYMITY) -> Path:
    """Write pairs/products/golden parquet files from generator output; return ``out_dir``."""
    out_dir.mkdir(parents=True, exist_ok=True)
    tables = {
        name: _READ.format(path=wands_dir / f"{name}.csv")
        for name in ("search_log", "product", "label", "query")
    }
    tables["changes"] = _READ.format(path=wands_dir / "catalog_changes.csv")
    con = duckdb.connect()
    try:
        con.execute(_SQL.format(k=k, validation_percent=VALIDATION_PERCENT, **tables))
        for table, name in (("pairs", "pairs"), ("catalog", "products"), ("golden", "golden")):
            con.execute(f"copy {table} to '{out_dir / name}.parquet' (format parquet)")
    finally:
        con.close()
    return out_dir


def _corpus_words(data_dir: Path) -> list[str]:
    con = duckdb.connect()
    try:
        texts = [
            row[0]
            for row in con.execute(
                f"select text_to_embed from '{data_dir / 'products.parquet'}' "
                f"union all select query from '{data_dir / 'pairs.parquet'}' "
                f"union all select query from '{data_dir / 'golden.parquet'}'"
            ).fetchall()
        ]
    finally:
        con.close()
    return [word for text in texts for word in re.findall(r"\w+|[^\w\s]", text.lower())]


def build_tiny_model(data_dir: Path, out_dir: Path, seed: int = 0) -> Path:
    """A 2-layer BERT (hidden 32) with a WordPiece vocabulary from the corpus, random weights.

    Saved as a sentence-transformers model (Transformer + mean pooling + Normalize), so
    the code under test loads it exactly as it loads the real bundled model.
    """
    import torch
    from sentence_transformers import SentenceTransformer
    from sentence_transformers.sentence_transformer.modules import Normalize, Pooling, Transformer
    from transformers import BertConfig, BertModel, BertTokenizerFast

    words = set(_corpus_words(data_dir))
    letters = sorted({ch for word in words for ch in word})
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    # Single characters, word-initial and continuation, so any word can be tokenised.
    vocab += sorted(words) + letters + [f"##{ch}" for ch in letters]
    raw_dir = out_dir.with_name(out_dir.name + "-hf")
    raw_dir.mkdir(parents=True, exist_ok=True)
    (raw_dir / "vocab.txt").write_text("\n".join(dict.fromkeys(vocab)) + "\n", encoding="utf-8")
    tokenizer = BertTokenizerFast(vocab_file=str(raw_dir / "vocab.txt"), do_lower_case=True)
    config = BertConfig(
        vocab_size=len(tokenizer),
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=128,
    )
    torch.manual_seed(seed)
    BertModel(config).save_pretrained(raw_dir)
    tokenizer.save_pretrained(raw_dir)
    transformer = Transformer(str(raw_dir), max_seq_length=64)
    pooling = Pooling(transformer.get_embedding_dimension(), pooling_mode="mean")
    model = SentenceTransformer(modules=[transformer, pooling, Normalize()], device="cpu")
    model.save(str(out_dir), create_model_card=False)
    return out_dir


GeneratedInputs = Callable[..., Path]


@pytest.fixture(scope="session", autouse=True)
def one_torch_thread() -> Iterator[int]:
    """Run torch on one thread; yields the default count.

    A tiny model does too little work per operation to gain from a second thread, and
    on a shared CPU the threads' synchronisation made these tests three times slower.
    """
    import torch

    default = torch.get_num_threads()
    torch.set_num_threads(1)
    yield default
    torch.set_num_threads(default)


@pytest.fixture(scope="module")
def all_torch_threads(one_torch_thread: int) -> Iterator[None]:
    """The default thread count back, for modules that train the real model."""
    import torch

    torch.set_num_threads(one_torch_thread)
    yield
    torch.set_num_threads(1)


@pytest.fixture(scope="session")
def generated_inputs(tmp_path_factory: pytest.TempPathFactory) -> GeneratedInputs:
    """``generated_inputs(products=, seed=, searches=, k=)``: generate a store, export it."""

    def make(products: int, seed: int, searches: int | None = None, k: int = K_ANONYMITY) -> Path:
        wands = generate(
            tmp_path_factory.mktemp("wands"), products=products, seed=seed, searches=searches
        )
        return build_training_inputs(wands.out_dir, tmp_path_factory.mktemp("data"), k=k)

    return make


@pytest.fixture(scope="session")
def tiny_data(generated_inputs: GeneratedInputs) -> Path:
    """A small generated store exported as the three training parquet files."""
    # k=2: the tiny store has few searches per query, and these tests need many queries.
    return generated_inputs(TINY_PRODUCTS, TINY_SEED, searches=TINY_SEARCHES, k=2)


@pytest.fixture(scope="session")
def tiny_model(tiny_data: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny random BERT, built once per session."""
    return build_tiny_model(tiny_data, tmp_path_factory.mktemp("tiny-model") / "model")


@pytest.fixture(scope="session")
def other_tiny_model(tiny_data: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny BERT with other random weights: another model, another embedding space."""
    return build_tiny_model(tiny_data, tmp_path_factory.mktemp("other-model") / "model", seed=1)
