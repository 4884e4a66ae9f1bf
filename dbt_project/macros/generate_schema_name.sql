{#
    Schemas are exactly `staging`, `intermediate` and `marts` (set per folder in
    dbt_project.yml), not dbt's default `<target schema>_<custom schema>`: the quality
    gates, training and Cosmos read these names. The marts of a catalog_refresh run go
    to the run's candidate schema instead (var `marts_schema`, `snapshot_<16 hex>`),
    which the orchestrator publishes as `marts` once the training-data gate passed
    (write-audit-publish, macros/publication.sql). Nodes without a custom schema (tests,
    unit-test fixtures) go to the target's schema.
#}
{% macro generate_schema_name(custom_schema_name, node) -%}
    {%- if custom_schema_name is none -%}
        {{ target.schema }}
    {%- elif custom_schema_name | trim == 'marts' -%}
        {{ var('marts_schema', 'marts') | trim }}
    {%- else -%}
        {{ custom_schema_name | trim }}
    {%- endif -%}
{%- endmacro %}
