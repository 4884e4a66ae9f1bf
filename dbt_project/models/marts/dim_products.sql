with

products as (

    select * from {{ ref('int_products_current') }}

),

described as (

    select
        *,
        -- The text the search model encodes: what a shopper could match a query against.
        -- concat_ws skips nulls, so a product without a brand gets no "brand:" fragment.
        concat_ws(
            '. ',
            product_name,
            product_class,
            nullif(
                concat_ws(
                    ', ',
                    'brand: ' || brand,
                    'color: ' || color,
                    'material: ' || material
                ),
                ''
            ),
            product_description
        ) as text_to_embed
    from products

),

final as (

    select
        cast(product_id as bigint) as product_id,
        cast(product_name as varchar) as product_name,
        cast(product_class as varchar) as product_class,
        cast(category_hierarchy as varchar) as category_hierarchy,
        cast(nullif(trim(split_part(category_hierarchy, '/', 1)), '') as varchar) as top_category,
        cast(brand as varchar) as brand,
        cast(color as varchar) as color,
        cast(material as varchar) as material,
        cast(price as double precision) as price,
        cast(rating_count as bigint) as rating_count,
        cast(average_rating as double precision) as average_rating,
        cast(review_count as bigint) as review_count,
        cast(text_to_embed as varchar) as text_to_embed,
        -- Incremental re-embedding keys on this: same text, same hash, no new vector.
        cast({{ sha256_hex('text_to_embed') }} as varchar) as content_hash,
        cast(is_active as boolean) as is_active
    from described

)

select * from final
