with

versions as (

    -- label.csv is a full snapshot of the golden judgements: only the latest published file
    -- counts (files of blocked batches are never read: write-audit-publish,
    -- macros/publication.sql).
    {{ snapshot_versions('judgements', 'id') }}

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
