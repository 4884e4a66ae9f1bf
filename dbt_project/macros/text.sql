{# Text cleaning shared by every staging model that reads free text. #}

{# Trim and collapse runs of whitespace (tabs, newlines, repeated spaces) to one space. #}
{% macro clean_text(expression) -%}
    nullif(trim(regexp_replace({{ expression }}, '\s+', ' ', 'g')), '')
{%- endmacro %}

{#
    A query as the search engine sees it: lowercase, trimmed, whitespace collapsed.
    Search-log and golden queries go through the same function, so leakage and
    popularity checks compare like with like.
#}
{% macro normalize_query(expression) -%}
    lower({{ clean_text(expression) }})
{%- endmacro %}
