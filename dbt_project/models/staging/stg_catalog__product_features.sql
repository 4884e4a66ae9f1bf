-- Reads the cleaned, de-duplicated catalog rather than the source, so that the
-- features always describe exactly the products of stg_catalog__products.
with

products as (

    select * from {{ ref('stg_catalog__products') }}

),

pairs as (

    select
        products.product_id,
        pairs.part_position as feature_position,
        pairs.part as pair
    from products
    {{ split_to_rows('products.product_features', '|', 'pairs') }}

),

final as (

    select
        product_id,
        cast(feature_position as integer) as feature_position,
        lower(trim(split_part(pair, ':', 1))) as feature_name,
        nullif(trim(substr(pair, strpos(pair, ':') + 1)), '') as feature_value
    from pairs
    -- Pieces without a name (stray or trailing delimiters) carry no feature.
    where strpos(pair, ':') > 1

)

select * from final
