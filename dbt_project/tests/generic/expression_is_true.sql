{#
    Every row satisfies a SQL boolean expression (an invariant such as `weight > 0`).
    The expression is always complete: declared under a column, it is only filed there
    for the reader (`column_name` is not prepended, unlike dbt_utils). Rows where it is
    null do not fail: pair it with not_null where that matters. Written here because dbt
    packages (dbt_utils) cannot be installed.
#}
{% test expression_is_true(model, expression, column_name=none) %}

select *
from {{ model }}
where not ({{ expression }})

{% endtest %}
