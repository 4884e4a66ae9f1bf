with

versions as (

    -- query.csv is a full snapshot of the golden set: only the latest published file counts
    -- (files of blocked batches are never read: write-audit-publish, macros/publication.sql).
    {{ snapshot_versions('queries', 'query_id') }}

),

final as (

    select
        query_id,
        {{ normalize_query('query') }} as query,
        {{ clean_text('query_class') }} as query_class
    from versions
    where version_rank = 1

)

select * from final
