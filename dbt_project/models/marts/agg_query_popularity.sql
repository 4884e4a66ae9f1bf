-- Only k-anonymous queries: a popularity table is published, so the same privacy rule
-- as for training applies.
with

queries as (

    select * from {{ ref('int_queries_k_anonymised') }}

),

final as (

    select
        cast(query as varchar) as query,
        cast(n_searches as bigint) as n_searches,
        cast(n_users as bigint) as n_users,
        cast(n_clicks as bigint) as n_clicks
    from queries

)

select * from final
