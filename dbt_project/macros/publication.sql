{#
    Write-audit-publish (invariant 9; plugins/shelfguard/data/publication.py maintains the
    tables these read).

    Staging reads only the raw files of published batches, plus the files of the one
    batch the current build is a candidate for (var `candidate_batch`, set by the
    orchestrator for a catalog_refresh run). A blocked batch stays in raw.* as evidence
    and is never read here.
#}

{% macro candidate_batch_literal() -%}
    '{{ var("candidate_batch", "") | replace("'", "''") }}'
{%- endmacro %}

{# The file contents (sha256) of raw table `table_name` that staging may read. #}
{% macro readable_files(table_name) -%}
    select batch_files.file_sha256 as _file_sha256
    from {{ source('governance', 'batch_files') }} as batch_files
    where batch_files.table_name = '{{ table_name }}'
        and (
            batch_files.batch_id in (
                select published.batch_id
                from {{ source('governance', 'published_batches') }} as published
            )
            or batch_files.batch_id = {{ candidate_batch_literal() }}
        )
{%- endmacro %}

{#
    The one file of a snapshot table (products, queries, judgements) that counts: the
    candidate batch's, else the most recently published one.
#}
{% macro latest_readable_file(table_name) -%}
    select batch_files.file_sha256 as _file_sha256
    from {{ source('governance', 'batch_files') }} as batch_files
    left join (
        select batch_id, max(published_at) as published_at
        from {{ source('governance', 'published_batches') }}
        group by batch_id
    ) as published
        on published.batch_id = batch_files.batch_id
    where batch_files.table_name = '{{ table_name }}'
        and (
            published.batch_id is not null
            or batch_files.batch_id = {{ candidate_batch_literal() }}
        )
    order by
        case when batch_files.batch_id = {{ candidate_batch_literal() }} then 1 else 0 end desc,
        published.published_at desc,
        batch_files.file_sha256 desc
    limit 1
{%- endmacro %}

{#
    The rows of snapshot table `table_name` (products, queries, judgements) that staging
    reads: those of its one readable file (latest_readable_file), rows without a `key`
    dropped, each ranked by `version_rank` (1 = the row's last version in the file).
#}
{% macro snapshot_versions(table_name, key) -%}
    select
        source.*,
        row_number() over (
            partition by source.{{ key }}
            order by source._ingested_at desc, source._line_number desc
        ) as version_rank
    from {{ source('catalog', table_name) }} as source
    inner join (
        {{ latest_readable_file(table_name) }}
    ) as latest_file
        on source._file_sha256 = latest_file._file_sha256
    where source.{{ key }} is not null
{%- endmacro %}

{#
    on-run-start: a build whose marts go to a snapshot schema must not touch a published
    snapshot (a cleared task of a run that already published, a hand-run build): what a
    retraining run pinned never changes under it.
#}
{% macro refuse_published_snapshot() -%}
    {%- set schema = var("marts_schema", "marts") -%}
    {%- if execute and schema != "marts" -%}
        {%- set found = run_query(
            "select count(*) from governance.snapshots where schema_name = '"
            ~ (schema | replace("'", "''")) ~ "'"
        ) -%}
        {%- if found.columns[0].values()[0] | int > 0 -%}
            {{ exceptions.raise_compiler_error(
                "schema " ~ schema ~ " holds a published snapshot: it is never rebuilt "
                ~ "(start a new catalog_refresh run instead)"
            ) }}
        {%- endif -%}
    {%- endif -%}
    select 1
{%- endmacro %}
