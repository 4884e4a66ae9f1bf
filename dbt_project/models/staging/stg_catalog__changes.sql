with

source as (

    -- Published batches only (and the run's candidate): a blocked batch is never read.
    select * from {{ source('catalog', 'catalog_changes') }}
    where _file_sha256 in ({{ readable_files('catalog_changes') }})

),

versions as (

    -- An event feed: every batch counts, and a change delivered twice is one change.
    select
        *,
        row_number() over (
            partition by change_id
            order by _ingested_at desc, _line_number desc
        ) as version_rank
    from source
    where change_id is not null

),

cleaned as (

    select
        change_id,
        cast(changed_at as timestamp) as changed_at,
        lower(trim(op)) as op,
        product_id,
        {{ clean_product_columns() }},
        _ingested_at as ingested_at
    from versions
    where version_rank = 1

),

final as (

    select
        change_id,
        changed_at,
        op,
        product_id,
        product_name,
        product_class,
        category_hierarchy,
        product_description,
        product_features,
        {{ parsed_feature_columns('product_features') }},
        rating_count,
        average_rating,
        review_count,
        ingested_at
    from cleaned

)

select * from final
