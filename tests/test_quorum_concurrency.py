"""Two approvers click at the same moment: exactly one Grant comes out.

Runs on PostgreSQL with real concurrent transactions (one connection per
thread). Without the row lock in decide() both would count only their own
approval and nobody would create the grant; without the compare-and-set on
the request's status both could create one."""

from __future__ import annotations

import threading
from datetime import timedelta

import pytest
from django.db import connection

from broker import approvals
from broker.models import AccessRequest, Approval, Grant
from tests.support.access_fixtures import plant  # noqa: F401

pytestmark = [pytest.mark.postgres, pytest.mark.django_db(transaction=True)]


def click_together(req, people, **kw) -> list[Exception | None]:
    barrier = threading.Barrier(len(people))
    results: list[Exception | None] = [None] * len(people)

    def click(i: int, person) -> None:
        try:
            barrier.wait(timeout=10)
            approvals.decide(person, req, approve=True, **kw)
        except Exception as exc:  # recorded for the assertions below
            results[i] = exc
        finally:
            connection.close()

    threads = [threading.Thread(target=click, args=(i, p)) for i, p in enumerate(people)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    return results


def new_request(plant):
    return approvals.submit_request(
        plant.vera,
        plant.device,
        protocols=["ssh"],
        starts_at=None,
        duration=timedelta(hours=1),
        reason="WO-1",
    )


@pytest.mark.parametrize("attempt", range(5))
def test_two_groups_approving_at_once_create_exactly_one_grant(plant, attempt):
    req = new_request(plant)
    results = click_together(req, [plant.olga, plant.sam])
    assert results == [None, None]
    req.refresh_from_db()
    assert req.status == AccessRequest.Status.APPROVED
    assert Grant.objects.filter(request=req).count() == 1
    assert Approval.objects.filter(request=req).count() == 2


@pytest.mark.parametrize("attempt", range(5))
def test_one_needed_and_two_click_at_once_gives_one_grant_and_one_clear_refusal(
    plant, make_approver, attempt
):
    plant.zone.approval_rules.filter(group=plant.sec).delete()
    otto = make_approver("otto", groups=[plant.ops])
    req = new_request(plant)
    results = click_together(req, [plant.olga, otto])
    refusals = [r for r in results if r is not None]
    assert len(refusals) == 1 and isinstance(refusals[0], approvals.Refused)
    assert "already approved" in str(refusals[0])
    assert Grant.objects.filter(request=req).count() == 1
