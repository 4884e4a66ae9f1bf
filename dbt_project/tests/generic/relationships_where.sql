{#
    Like `relationships`, but the parent row must also satisfy `to_condition`
    (e.g. a training pair may only reference an active product).
#}
{% test relationships_where(model, column_name, to, field, to_condition) %}

with child as (
    select {{ column_name }} as key_value
    from {{ model }}
    where {{ column_name }} is not null
),

parent as (
    select {{ field }} as key_value
    from {{ to }}
    where {{ to_condition }}
)

select child.key_value
from child
left join parent
    on child.key_value = parent.key_value
where parent.key_value is null

{% endtest %}
