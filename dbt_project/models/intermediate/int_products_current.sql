{%- set attributes = product_attribute_names() -%}

with

products as (

    select * from {{ ref('stg_catalog__products') }}

),

changes as (

    select * from {{ ref('stg_catalog__changes') }}

),

snapshot_time as (

    select max(ingested_at) as ingested_at
    from products

),

applicable_changes as (

    -- Changes that arrived with the snapshot's batch or later. Earlier ones are assumed
    -- to be reflected in the snapshot already (it is a full export of the catalog).
    select changes.*
    from changes
    cross join snapshot_time
    where changes.ingested_at >= snapshot_time.ingested_at
        and changes.product_id is not null

),

versions as (

    select
        product_id,
        {%- for column in attributes %}
        {{ column }},
        {%- endfor %}
        0 as version_group,
        cast(null as timestamp) as changed_at,
        cast(null as bigint) as change_id
    from products

    union all

    select
        product_id,
        {%- for column in attributes %}
        {{ column }},
        {%- endfor %}
        1 as version_group,
        changed_at,
        change_id
    from applicable_changes
    where op = 'upsert'

),

latest_versions as (

    -- An upsert replaces the whole product; the latest upsert wins over the snapshot.
    select
        *,
        row_number() over (
            partition by product_id
            order by version_group desc, changed_at desc nulls last, change_id desc nulls last
        ) as version_rank
    from versions

),

last_changes as (

    select
        product_id,
        op,
        changed_at,
        row_number() over (
            partition by product_id
            order by changed_at desc nulls last, change_id desc
        ) as change_rank
    from applicable_changes

),

final as (

    -- A delete keeps the product's last known attributes and marks it inactive; a delete
    -- of a product that never existed leaves nothing behind.
    select
        latest_versions.product_id,
        {%- for column in attributes %}
        latest_versions.{{ column }},
        {%- endfor %}
        coalesce(last_changes.op, 'none') <> 'delete' as is_active,
        case
            when latest_versions.version_group = 0 then 'snapshot'
            else 'change_feed'
        end as version_source,
        last_changes.changed_at as last_changed_at
    from latest_versions
    left join last_changes
        on latest_versions.product_id = last_changes.product_id
        and last_changes.change_rank = 1
    where latest_versions.version_rank = 1

)

select * from final
