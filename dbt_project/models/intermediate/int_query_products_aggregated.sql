{#
    Position-debiased click rate: a product shown at position p is examined with
    probability 1 / p ^ eta (position-based click model), so its clicks are divided by
    the number of examinations expected, not by raw impressions. Rank 1 counts fully,
    lower ranks less: a product clicked at rank 8 is more attractive than one clicked
    as often at rank 1.
#}
{%- set eta = var('examination_eta') -%}

with

impressions as (

    select * from {{ ref('stg_behaviour__search_impressions') }}

),

examined as (

    select
        query,
        product_id,
        user_key,
        is_clicked,
        is_added_to_cart,
        is_purchased,
        power(
            cast(position as double precision),
            -cast({{ eta }} as double precision)
        ) as examination_probability
    from impressions

),

aggregated as (

    select
        query,
        product_id,
        count(*) as impressions,
        count(*) filter (where is_clicked) as clicks,
        count(*) filter (where is_added_to_cart) as add_to_carts,
        count(*) filter (where is_purchased) as purchases,
        count(distinct user_key) as n_users,
        sum(examination_probability) as expected_examinations
    from examined
    group by
        query,
        product_id

),

final as (

    select
        query,
        product_id,
        impressions,
        clicks,
        add_to_carts,
        purchases,
        n_users,
        expected_examinations,
        clicks / expected_examinations as debiased_ctr
    from aggregated

)

select * from final
