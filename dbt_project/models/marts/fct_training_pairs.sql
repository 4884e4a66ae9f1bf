{#
    (query, product) pairs the search model is fine-tuned on, from the click logs.
    Only queries typed by at least k distinct users, only products still active, only
    pairs clicked at least once. The split is decided by a hash of the query text, so a
    query is never both trained on and validated on, and the same query lands in the
    same split in every run.
#}

with

pairs as (

    select * from {{ ref('int_query_products_aggregated') }}

),

k_anonymous_queries as (

    select * from {{ ref('int_queries_k_anonymised') }}

),

products as (

    select * from {{ ref('dim_products') }}

),

eligible as (

    select pairs.*
    from pairs
    inner join k_anonymous_queries
        on pairs.query = k_anonymous_queries.query
    inner join products
        on pairs.product_id = products.product_id
    where products.is_active
        and pairs.clicks > 0

),

graded as (

    select
        *,
        -- The strongest engagement seen for the pair.
        case
            when purchases > 0 then 3
            when add_to_carts > 0 then 2
            else 1
        end as grade
    from eligible

),

final as (

    select
        cast(
            {{ sha256_hex("query || '|' || cast(product_id as varchar)") }} as varchar
        ) as pair_id,
        cast(query as varchar) as query,
        cast(product_id as bigint) as product_id,
        cast(grade as smallint) as grade,
        -- Stronger engagement weighs more; within a grade, a pair clicked more often
        -- than its positions predict weighs up to twice as much. Always >= 1.
        cast(grade * (1 + least(debiased_ctr, 1.0)) as double precision) as weight,
        cast(n_users as bigint) as n_users,
        cast(impressions as bigint) as impressions,
        cast(clicks as bigint) as clicks,
        cast(debiased_ctr as double precision) as debiased_ctr,
        cast(
            case
                when {{ hash_bucket('query', 100) }} < {{ var('validation_percent') }}
                    then 'validation'
                else 'train'
            end as varchar
        ) as split
    from graded

)

select * from final
