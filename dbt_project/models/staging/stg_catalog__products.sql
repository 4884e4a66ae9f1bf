with

versions as (

    -- A product file is a full snapshot: only the most recently published one counts
    -- (files of blocked batches are never read: write-audit-publish, macros/publication.sql).
    -- A product id repeated in the file is a later version of the product: keep the last.
    {{ snapshot_versions('products', 'product_id') }}

),

cleaned as (

    select
        product_id,
        {{ clean_product_columns() }},
        _file_sha256 as file_sha256,
        _line_number as line_number,
        _ingested_at as ingested_at
    from versions
    where version_rank = 1

),

final as (

    select
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
        file_sha256,
        line_number,
        ingested_at
    from cleaned

)

select * from final
