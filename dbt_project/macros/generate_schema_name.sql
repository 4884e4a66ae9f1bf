{#
    Schemas are exactly `staging`, `intermediate` and `marts` (set per folder in
    dbt_project.yml), not dbt's default `<target schema>_<custom schema>`: the quality
    gates, training and Cosmos read these names. Nodes without a custom schema (tests,
    unit-test fixtures) go to the target's schema.
#}
{% macro generate_schema_name(custom_schema_name, node) -%}
    {%- if custom_schema_name is none -%}
        {{ target.schema }}
    {%- else -%}
        {{ custom_schema_name | trim }}
    {%- endif -%}
{%- endmacro %}
