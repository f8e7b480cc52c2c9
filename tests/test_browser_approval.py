"""In Debian's chromium: the demo vendor requests the demo device;
approver A (Plant operations) approves and the request still shows
pending; approver B (OT security) approves after a step-up code; the
vendor's page shows the grant."""

from __future__ import annotations

import pytest
from django.contrib.sessions.backends.db import SessionStore
from django.urls import reverse

from broker.models import AccessRequest, ApproverGroup, Grant, TOTPDevice
from sessions.demo import inventory as demo
from tests.conftest import SCREENSHOTS, TEST_PASSWORD, totp_now

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]


def shot(page, name: str) -> None:
    page.screenshot(path=str(SCREENSHOTS / f"approval-{name}.png"), full_page=True)


def sign_in(browser, base: str, user) -> object:
    page = browser.new_context().new_page()
    page.goto(base + reverse("login"))
    page.fill("#id_username", user.username)
    page.fill("#id_password", TEST_PASSWORD)
    page.click("button[type=submit].primary")
    page.wait_for_url(base + reverse("login-otp") + "*")
    page.fill("#id_code", totp_now(TOTPDevice.objects.get(user=user)))
    page.click("button[type=submit].primary")
    page.wait_for_url(base + reverse("home"))
    return page


def forget_step_up(page) -> None:
    """As if the sign-in was more than five minutes ago."""
    cookie = next(c for c in page.context.cookies() if c["name"] == "sessionid")
    session = SessionStore(session_key=cookie["value"])
    session.pop("airlock_otp_at")
    session.save()


def test_two_groups_approve_in_the_browser_and_the_vendor_sees_the_grant(
    live_server, browser, make_vendor_user, make_approver
):
    base = live_server.url
    vera = make_vendor_user("vera")
    demo.seed_inventory(vera.vendor)
    olga = make_approver("olga", groups=[ApproverGroup.objects.get(name=demo.GROUP_OPERATIONS)])
    sam = make_approver("sam", groups=[ApproverGroup.objects.get(name=demo.GROUP_SECURITY)])

    # The vendor asks for the demo PLC, from the moment it is approved.
    vendor_page = sign_in(browser, base, vera)
    vendor_page.goto(base + reverse("device-list"))
    vendor_page.click("text=Request access")
    vendor_page.check("input[name=protocols][value=ssh]")
    vendor_page.fill("#id_hours", "2")
    vendor_page.fill("#id_reason", "WO-4711 replace the labeller's encoder")
    shot(vendor_page, "1-request-form")
    vendor_page.click("button[type=submit].primary")
    vendor_page.wait_for_url(base + "/access/requests/*/")
    assert vendor_page.inner_text("#request-status") == "Pending"
    req = AccessRequest.objects.get()

    # Approver A (Plant operations) approves: still pending, OT security next.
    olga_page = sign_in(browser, base, olga)
    olga_page.goto(base + reverse("approval-queue"))
    assert "0 of 2" in olga_page.inner_text("main")
    olga_page.click("text=Review")
    olga_page.click("text=Approve or deny")
    olga_page.click("button[value=approve]")
    olga_page.wait_for_url(base + reverse("request-detail", args=[req.code]))
    assert olga_page.inner_text("#request-status") == "Pending"
    assert olga_page.inner_text("#quorum-progress") == "1 of 2: OT security pending"
    shot(olga_page, "2-after-first-approval")
    assert not Grant.objects.exists()

    # Approver B (OT security) must confirm with a fresh code first.
    sam_page = sign_in(browser, base, sam)
    forget_step_up(sam_page)
    sam_page.goto(base + reverse("request-detail", args=[req.code]))
    sam_page.click("text=Approve or deny")
    sam_page.wait_for_url(base + reverse("login-step-up") + "*")
    shot(sam_page, "3-step-up")
    sam_page.fill("#id_code", totp_now(TOTPDevice.objects.get(user=sam), offset_steps=1))
    sam_page.click("button[type=submit].primary")
    sam_page.wait_for_url(base + reverse("request-decide", args=[req.code]))
    sam_page.click("button[value=approve]")
    sam_page.wait_for_url(base + reverse("request-detail", args=[req.code]))
    assert sam_page.inner_text("#request-status") == "Approved"
    grant = Grant.objects.get(request=req)

    # The vendor's page shows the grant and how to connect.
    vendor_page.goto(base + reverse("grant-list"))
    vendor_page.click("text=Open")
    vendor_page.wait_for_url(base + reverse("grant-detail", args=[grant.code]))
    assert vendor_page.inner_text("#grant-state") == "active"
    assert "demo-plc" in vendor_page.inner_text("#how-to-connect")
    shot(vendor_page, "4-grant")
