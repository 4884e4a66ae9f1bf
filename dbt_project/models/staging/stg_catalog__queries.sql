with

source as (

    select * from {{ source('catalog', 'queries') }}

),

latest_file as (

    -- query.csv is a full snapshot of the golden set: only the latest published file counts.
    -- Files of blocked batches are never read (write-audit-publish, macros/publication.sql).
    {{ latest_readable_file('queries') }}

),

versions as (

    select
        source.*,
        row_number() over (
            partition by source.query_id
            order by source._ingested_at desc, source._line_number desc
        ) as version_rank
    from source
    inner join latest_file
        on source._file_sha256 = latest_file._file_sha256
    where source.query_id is not null

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
