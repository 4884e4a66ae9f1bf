{#
    Schema creation that two dbt processes may do at once.

    Cosmos runs one dbt process per task, and a worker runs several tasks at a time: on a
    new warehouse, two staging models start together and both create `staging`.
    PostgreSQL's `create schema if not exists` is not safe against that race: the
    second session waits for the first one's uncommitted row in pg_namespace, then fails
    with unique_violation (or duplicate_schema), and its model with it, though the schema
    now exists. Here the loser of the race takes the schema the winner made.
    (Overrides dbt-postgres' own macro of the same name, which the dispatch prefers.)
#}
{% macro postgres__create_schema(relation) -%}
    {%- if relation.database -%}
        {{ adapter.verify_database(relation.database) }}
    {%- endif -%}
    {%- call statement('create_schema') -%}
        do $create_schema$
        begin
            create schema if not exists {{ relation.without_identifier().include(database=False) }};
        exception when unique_violation or duplicate_schema then
            null;
        end
        $create_schema$
    {%- endcall -%}
{%- endmacro %}
