{#
    The only model that reads personal data. user_id becomes user_key, a keyed hash
    (sha256 of key || user_id): stable per user, so distinct users can still be counted
    for k-anonymity, but not reversible without the key. user_id and user_email are not
    selected, so nothing downstream can reach them.
#}
{%- set pseudonym_key = env_var('SHELFGUARD_PSEUDONYM_KEY', 'dev-only-key') -%}

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
        {{ sha256_hex("'" ~ (pseudonym_key | replace("'", "''")) ~ "' || user_id") }} as user_key,
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
