{# `column_name` takes a single value within each group of `group_by` (e.g. a query's split). #}
{% test constant_within(model, column_name, group_by) %}

select
    {{ group_by }},
    count(distinct {{ column_name }}) as n_values
from {{ model }}
group by {{ group_by }}
having count(distinct {{ column_name }}) > 1

{% endtest %}
