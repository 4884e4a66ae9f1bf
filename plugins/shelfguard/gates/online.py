"""The online gate: the challenger against the champion on what shoppers did.

Judges the canary this run started (:mod:`shelfguard.model.canary`): the searches each
pair answered since the canary began, from the search service's delivery folders, under
the policy's ``canary`` block (:mod:`shelfguard.model.online` holds the test: a
position-debiased CTR or a click nDCG, compared by a bootstrap non-inferiority test).
The subject is ``pair:<model>:<index>``, the challenger's pair. Run by the online gate
task once the canary has its impressions or its time ran out (evidence ``timed_out``);
too few impressions fail the gate. See docs/gates/online.md.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from shelfguard.gates.core import GateOutcome
from shelfguard.model import canary, online
from shelfguard.model.promotion import online_subject

if TYPE_CHECKING:
    from shelfguard.gates.core import GateContext

GATE = online.GATE


def run(ctx: GateContext) -> GateOutcome:
    """The verdict on the running canary's evidence (``timed_out``: the wait ran out)."""
    policy = ctx.policy.canary
    found = canary.evidence(ctx.ledger, canary.served_folder(ctx.settings), policy)
    verdict = canary.judge(found, policy)
    checks = verdict.checks(found.champion, found.challenger, policy.min_impressions)
    if ctx.evidence.get("timed_out"):
        checks[0]["comment"] += f"; waited {policy.max_wait_minutes} minutes"
    metrics = {
        arm.name: {
            "sessions": arm.sessions,
            "searches": arm.searches,
            "impressions": arm.impressions,
            "clicks": arm.clicks,
            policy.metric: round(arm.value, 6),
        }
        for arm in (found.champion, found.challenger)
    }
    return GateOutcome.of(
        GATE,
        online_subject(*found.challenger_pair),
        checks,
        {**metrics, "champion_pair": list(found.champion_pair)},
    )
