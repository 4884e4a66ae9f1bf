{#
    SQL that differs between DuckDB (embedded) and PostgreSQL (production).
    Each macro dispatches on the adapter: `default__` is the PostgreSQL flavour,
    `duckdb__` overrides it where DuckDB spells things differently.
#}

{# Lowercase hex sha256 of a text expression. #}
{% macro sha256_hex(expression) -%}
    {{ return(adapter.dispatch('sha256_hex', 'shelfguard')(expression)) }}
{%- endmacro %}

{% macro default__sha256_hex(expression) -%}
    encode(sha256(convert_to({{ expression }}, 'UTF8')), 'hex')
{%- endmacro %}

{% macro duckdb__sha256_hex(expression) -%}
    sha256({{ expression }})
{%- endmacro %}


{#
    A stable bucket in [0, buckets) from the md5 of a text expression: same text, same
    bucket, on every adapter and every run (unlike DuckDB's hash(), which may change
    between versions). Uses the first 32 bits of the digest.
#}
{% macro hash_bucket(expression, buckets) -%}
    {{ return(adapter.dispatch('hash_bucket', 'shelfguard')(expression, buckets)) }}
{%- endmacro %}

{% macro default__hash_bucket(expression, buckets) -%}
    (('x' || substr(md5({{ expression }}), 1, 8))::bit(32)::bigint % {{ buckets }})
{%- endmacro %}

{% macro duckdb__hash_bucket(expression, buckets) -%}
    (cast('0x' || substr(md5({{ expression }}), 1, 8) as bigint) % {{ buckets }})
{%- endmacro %}


{#
    The value of one `name:value` pair in a `|`-delimited feature string, or null when the
    name is absent (WANDS `product_features`). The value runs to the next `|`.
#}
{% macro feature_value(expression, name) -%}
    {{ return(adapter.dispatch('feature_value', 'shelfguard')(expression, name)) }}
{%- endmacro %}

{% macro default__feature_value(expression, name) -%}
    nullif(trim(substring({{ expression }} from '(?:^|\|)\s*{{ name }}\s*:([^|]*)')), '')
{%- endmacro %}

{% macro duckdb__feature_value(expression, name) -%}
    nullif(trim(regexp_extract({{ expression }}, '(?:^|\|)\s*{{ name }}\s*:([^|]*)', 1)), '')
{%- endmacro %}


{# A text expression as a double, or null when it is not a plain decimal number. #}
{% macro safe_cast_double(expression) -%}
    {{ return(adapter.dispatch('safe_cast_double', 'shelfguard')(expression)) }}
{%- endmacro %}

{% macro default__safe_cast_double(expression) -%}
    case
        when trim({{ expression }}) ~ '^[-+]?[0-9]+(\.[0-9]+)?$'
            then cast(trim({{ expression }}) as double precision)
    end
{%- endmacro %}

{% macro duckdb__safe_cast_double(expression) -%}
    case
        when regexp_full_match(trim({{ expression }}), '[-+]?[0-9]+(\.[0-9]+)?')
            then cast(trim({{ expression }}) as double precision)
    end
{%- endmacro %}


{#
    One row per element of a delimited text column, with its 1-based position:
    `from <relation> <join clause> as <alias>(<value>, <position>)`. Used as the
    lateral join of a `from` clause, e.g.
    `from products {{ split_to_rows('products.product_features', '|', 'pairs') }}`
    then `pairs.part`, `pairs.part_position`.
#}
{% macro split_to_rows(expression, delimiter, alias) -%}
    {{ return(adapter.dispatch('split_to_rows', 'shelfguard')(expression, delimiter, alias)) }}
{%- endmacro %}

{% macro default__split_to_rows(expression, delimiter, alias) -%}
    cross join lateral unnest(string_to_array({{ expression }}, '{{ delimiter }}'))
        with ordinality as {{ alias }}(part, part_position)
{%- endmacro %}
