-- The category mix is a distribution over the active catalog: its shares sum to 1.
select sum(share) as total_share
from {{ ref('agg_category_mix') }}
having abs(sum(share) - 1) > 1e-9
