{#
    The cleaned product attributes, shared by the catalog snapshot (stg_catalog__products)
    and the change feed (stg_catalog__changes) so that an upsert replaces a product with
    columns cleaned exactly like the snapshot's.
#}

{# Text trimmed and whitespace-collapsed; counts as integers (WANDS writes "15.0"). #}
{% macro clean_product_columns() -%}
    {{ clean_text('product_name') }} as product_name,
    {{ clean_text('product_class') }} as product_class,
    {{ clean_text('category_hierarchy') }} as category_hierarchy,
    {{ clean_text('product_description') }} as product_description,
    {{ clean_text('product_features') }} as product_features,
    cast(round(rating_count) as bigint) as rating_count,
    average_rating,
    cast(round(review_count) as bigint) as review_count
{%- endmacro %}

{# The attributes the search text and the marts need, parsed out of `product_features`. #}
{% macro parsed_feature_columns(features) -%}
    {{ feature_value(features, 'brand') }} as brand,
    {{ feature_value(features, 'color') }} as color,
    {{ feature_value(features, 'material') }} as material,
    {{ safe_cast_double(feature_value(features, 'price')) }} as price
{%- endmacro %}

{# Every product attribute column, in order: for unions and "take the latest version". #}
{% macro product_attribute_names() -%}
    {{ return([
        'product_name', 'product_class', 'category_hierarchy', 'product_description',
        'product_features', 'brand', 'color', 'material', 'price',
        'rating_count', 'average_rating', 'review_count',
    ]) }}
{%- endmacro %}
