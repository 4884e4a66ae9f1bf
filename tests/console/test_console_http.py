"""The console's security model over plain HTTP, against the real api-server.

Every refused request here targets a run that stays waiting for a decision all session
(triggered by governance-owner, who may still reject it): a request that got through
would leave a decision in the ledger.
"""

from __future__ import annotations

import re

import httpx
import pytest
from console_seed import BLOCKED_RUN, OWN_RUN, PROMOTED_RUNS, PUBLISHED_RUN, Console

from shelfguard.console.deps import run_href
from shelfguard.ledger import open_ledger

PAGES = (
    "",
    "runs",
    "runs/" + BLOCKED_RUN,
    "approvals",
    "champion",
    "batches",
    "static/console.css",
)


def _token(console: Console, user: str) -> str:
    response = httpx.post(
        f"{console.root}/auth/token",
        json={"username": user, "password": console.passwords[user]},
    )
    assert response.status_code == 201, response.text
    return str(response.json()["access_token"])


def _decisions(console: Console) -> int:
    ledger = open_ledger(console.settings.ledger_url)
    try:
        return len(ledger.approvals(OWN_RUN))
    finally:
        ledger.dispose()


@pytest.mark.parametrize("page", PAGES)
def test_anonymous_requests_are_refused_with_401(console: Console, page: str) -> None:
    response = httpx.get(console.url + page, headers={"accept": "application/json"})
    assert response.status_code == 401
    assert response.json() == {"detail": "Not authenticated"}


def test_an_anonymous_browser_gets_a_sign_in_link(console: Console) -> None:
    response = httpx.get(console.url + "runs", headers={"accept": "text/html"})
    assert response.status_code == 401
    assert "Sign in to Airflow" in response.text
    assert "/auth/login?next=%2Fshelfguard%2Fruns" in response.text


def test_anonymous_and_forged_decisions_are_refused(console: Console) -> None:
    form = {"run_id": OWN_RUN, "decision": "approved"}
    anonymous = httpx.post(console.url + "approvals/decide", data=form)
    assert anonymous.status_code == 401
    forged = httpx.post(
        console.url + "approvals/decide", data=form, cookies={"_token": "eyJhbGciOi.forged.x"}
    )
    assert forged.status_code == 403
    assert _decisions(console) == 0


def test_a_cookie_session_needs_the_form_token_and_this_origin(console: Console) -> None:
    owner = {"_token": _token(console, "governance-owner")}
    page = httpx.get(console.url + "approvals", cookies=owner)
    assert page.status_code == 200 and "Reject" in page.text
    browser_key = page.cookies["shelfguard_csrf"]
    token = page.text.split('name="csrf-token" content="', 1)[1].split('"', 1)[0]
    cookies = {**owner, "shelfguard_csrf": browser_key}
    form = {"run_id": OWN_RUN, "decision": "rejected"}

    no_token = httpx.post(
        console.url + "approvals/decide",
        data=form,
        cookies=cookies,
        headers={"origin": console.root},
    )
    assert no_token.status_code == 403
    assert "form token" in no_token.json()["detail"]

    elsewhere = httpx.post(
        console.url + "approvals/decide",
        data={**form, "csrf_token": token},
        cookies=cookies,
        headers={"origin": "https://attacker.example"},
    )
    assert elsewhere.status_code == 403
    assert "cross-origin" in elsewhere.json()["detail"]

    other_browser = httpx.post(
        console.url + "approvals/decide",
        data={**form, "csrf_token": token},
        cookies={**owner, "shelfguard_csrf": "another-browser"},
        headers={"origin": console.root},
    )
    assert other_browser.status_code == 403
    assert _decisions(console) == 0


def test_a_bearer_token_of_a_non_approver_is_refused(console: Console) -> None:
    engineer = {"authorization": f"Bearer {_token(console, 'data-engineer')}"}
    assert httpx.get(console.url + "approvals", headers=engineer).status_code == 200
    response = httpx.post(
        console.url + "approvals/decide",
        data={"run_id": OWN_RUN, "decision": "approved"},
        headers={**engineer, "accept": "application/json"},
    )
    assert response.status_code == 403
    assert "data-engineer is not an approver" in response.json()["detail"]
    rollback = httpx.post(
        console.url + "champion/rollback", data={"to_version": "1"}, headers=engineer
    )
    assert rollback.status_code == 403
    assert _decisions(console) == 0


def test_data_docs_are_served_only_from_the_gate_s_own_site(console: Console) -> None:
    from shelfguard.console.routes.runs import docs_key

    headers = {"authorization": f"Bearer {_token(console, 'data-engineer')}"}
    site = f"{console.url}datadocs/{docs_key(BLOCKED_RUN)}/raw_data/"
    page = httpx.get(site + "validations/v1.html", headers=headers)
    assert page.status_code == 200 and "validation v1" in page.text
    escape = httpx.get(site + "..%2F..%2F..%2Fledger.db", headers=headers)
    assert escape.status_code == 404
    assert httpx.get(site + "index.html").status_code == 401


def test_a_model_run_links_the_catalog_refresh_run_its_data_came_from(console: Console) -> None:
    headers = {"authorization": f"Bearer {_token(console, 'data-engineer')}"}
    page = httpx.get(console.url + run_href(PROMOTED_RUNS[0]), headers=headers)
    assert page.status_code == 200
    (upstream,) = re.findall(r'<p data-testid="upstream">(.*?)</p>', page.text, re.S)
    assert f'{run_href(PUBLISHED_RUN)}"><code>{PUBLISHED_RUN}</code></a>' in upstream, upstream
    assert "batch-0001" in upstream
