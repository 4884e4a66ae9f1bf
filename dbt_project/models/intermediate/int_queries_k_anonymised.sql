{#
    k-anonymity (invariant 8): a query typed by fewer than k distinct users can single
    somebody out (a name, an address, a rare need), so it never reaches training or a
    published mart. k is the policy's privacy.k_anonymity, passed as a dbt var.
#}

with

impressions as (

    select * from {{ ref('stg_behaviour__search_impressions') }}

),

per_query as (

    select
        query,
        count(distinct user_key) as n_users,
        count(distinct search_id) as n_searches,
        count(*) as n_impressions,
        count(*) filter (where is_clicked) as n_clicks
    from impressions
    group by query

),

final as (

    select
        query,
        n_users,
        n_searches,
        n_impressions,
        n_clicks
    from per_query
    where n_users >= {{ var('k_anonymity') }}

)

select * from final
