{#
    The user is user_key, the pseudonym ingest stored (HMAC-SHA256 of the user id, with
    a key kept outside the warehouse): stable per user, so distinct users can still be
    counted for k-anonymity, but not reversible without the key, which dbt never sees.
#}

with

source as (

    -- Published batches only (and the run's candidate): a blocked batch is never read.
    select * from {{ source('behaviour', 'search_log') }}
    where _file_sha256 in ({{ readable_files('search_log') }})

),

versions as (

    -- An event log: every batch counts; an impression (search, position) delivered
    -- twice is one impression, the latest delivery winning.
    select
        *,
        row_number() over (
            partition by search_id, position
            order by _ingested_at desc, _line_number desc
        ) as version_rank
    from source

),

final as (

    select
        search_id,
        session_id,
        user_key,
        cast(searched_at as timestamp) as searched_at,
        {{ normalize_query('query') }} as query,
        product_id,
        position,
        clicked = 1 as is_clicked,
        added_to_cart = 1 as is_added_to_cart,
        purchased = 1 as is_purchased
    from versions
    where version_rank = 1

)

select * from final
