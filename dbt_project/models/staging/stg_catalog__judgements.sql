with

source as (

    select * from {{ source('catalog', 'judgements') }}

),

latest_file as (

    -- label.csv is a full snapshot of the golden judgements: only the latest published file counts.
    -- Files of blocked batches are never read (write-audit-publish, macros/publication.sql).
    {{ latest_readable_file('judgements') }}

),

versions as (

    select
        source.*,
        row_number() over (
            partition by source.id
            order by source._ingested_at desc, source._line_number desc
        ) as version_rank
    from source
    inner join latest_file
        on source._file_sha256 = latest_file._file_sha256
    where source.id is not null

),

renamed as (

    select
        id as judgement_id,
        query_id,
        product_id,
        {{ clean_text('label') }} as label
    from versions
    where version_rank = 1

),

final as (

    select
        judgement_id,
        query_id,
        product_id,
        label,
        -- WANDS gains for nDCG. An unknown label keeps a null grade so that a test fails
        -- loudly instead of the label silently counting as irrelevant.
        cast(
            case label
                when 'Exact' then 2
                when 'Partial' then 1
                when 'Irrelevant' then 0
            end as smallint
        ) as grade
    from renamed

)

select * from final
