"""In Debian's chromium: an approver watches the live sessions page while a
vendor's real OpenSSH session runs through the gateway to a real sshd, ends
it with a reason and a lock on the user; the vendor's ssh exits with who
ended it and why, and the page confirms."""

from __future__ import annotations

import subprocess
from typing import Any

import pytest
from django.urls import reverse

from broker.models import Lock
from sessions.models import Session
from tests.conftest import SCREENSHOTS
from tests.support.browser_session import session_cookie
from tests.support.sshd import device_sshd, gateway, make_ssh_vendor, vendor, wait_for  # noqa: F401

pytestmark = [pytest.mark.browser, pytest.mark.sshd, pytest.mark.django_db(transaction=True)]


def test_an_approver_ends_a_live_ssh_session_from_the_browser(
    live_server: Any, browser: Any, vendor: Any, make_group: Any, make_approver: Any, settings: Any
) -> None:
    from broker.models import ApprovalRule

    group = make_group("Plant operations")
    ApprovalRule.objects.create(zone=vendor.device.zone, group=group, count=1)
    olga = make_approver("olga", groups=[group])
    ssh = subprocess.Popen(
        vendor.ssh_args("sleep 600"), stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    wait_for(lambda: Session.objects.filter(user=vendor.user, ended_at=None).exists())

    context = browser.new_context()
    context.add_cookies(
        [
            {
                "name": settings.SESSION_COOKIE_NAME,
                "value": session_cookie(olga),
                "url": live_server.url,
            }
        ]
    )
    page = context.new_page()
    page.goto(live_server.url + reverse("live-sessions"))
    row = page.locator("#live-sessions tbody tr", has_text=vendor.device.slug)
    assert vendor.user.username in row.inner_text()
    page.screenshot(path=str(SCREENSHOTS / "oversight-1-live.png"), full_page=True)

    row.locator("input[name=reason]").fill("unannounced change to the safety PLC")
    row.locator("select[name=lock]").select_option("user")
    row.locator("select[name=lock_minutes]").select_option("60")
    row.locator("button", has_text="Terminate").click()
    page.wait_for_url(live_server.url + reverse("live-sessions"))

    assert "terminated" in page.locator(".messages").inner_text()
    page.screenshot(path=str(SCREENSHOTS / "oversight-2-terminated.png"), full_page=True)
    _, err = ssh.communicate(timeout=30)  # a hang guard only
    text = err.decode(errors="replace")
    assert "unannounced change to the safety PLC" in text and "olga" in text
    assert Lock.objects.get(user=vendor.user).created_by == olga
