with

products as (

    select * from {{ ref('dim_products') }}

),

active_products as (

    select
        coalesce(product_class, '(unclassified)') as product_class
    from products
    where is_active

),

per_class as (

    select
        product_class,
        count(*) as n_products
    from active_products
    group by product_class

),

final as (

    select
        cast(product_class as varchar) as product_class,
        cast(n_products as bigint) as n_products,
        cast(n_products as double precision)
            / cast(sum(n_products) over () as double precision) as share
    from per_class

)

select * from final
