with

judgements as (

    select * from {{ ref('stg_catalog__judgements') }}

),

queries as (

    select * from {{ ref('stg_catalog__queries') }}

),

products as (

    select * from {{ ref('dim_products') }}

),

final as (

    select
        cast(judgements.judgement_id as bigint) as judgement_id,
        cast(judgements.query_id as bigint) as query_id,
        cast(queries.query as varchar) as query,
        cast(queries.query_class as varchar) as query_class,
        cast(judgements.product_id as bigint) as product_id,
        cast(judgements.label as varchar) as label,
        cast(judgements.grade as smallint) as grade,
        -- Judgements of products missing from the catalog stay visible (the raw gate
        -- counts them); evaluation skips them.
        cast(products.product_id is not null as boolean) as is_known_product
    from judgements
    left join queries
        on judgements.query_id = queries.query_id
    left join products
        on judgements.product_id = products.product_id

)

select * from final
