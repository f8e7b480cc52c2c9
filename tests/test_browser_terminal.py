"""The browser terminal end to end, in Debian's chromium: the portal served
by uvicorn (ASGI, websockets) in this process, xterm.js from static/vendor/,
the real session core, and a real sshd as the device. Then an auditor finds
the session by what was typed and plays it back."""

from __future__ import annotations

import pytest
from django.urls import reverse

from broker.models import ApprovalRule, ApproverGroup, TOTPDevice
from sessions.live.revocation import revoke
from sessions.models import Command, Session
from tests.conftest import SCREENSHOTS, totp_now
from tests.support.asgi_server import asgi_server  # noqa: F401  (fixture)
from tests.support.browser_session import session_cookie
from tests.support.sshd import device_sshd, pin_device, wait_for  # noqa: F401  (fixture)

pytestmark = [pytest.mark.browser, pytest.mark.sshd, pytest.mark.django_db(transaction=True)]

# Milliseconds between keys: a person's pace. At machine speed the
# machine-speed-input detector (rightly) ends the session.
TYPING_DELAY = 40
SCREEN_TEXT = """() => {
  const buffer = window.airlockTerminal.buffer.active;
  const lines = [];
  for (let i = 0; i < buffer.length; i++) { lines.push(buffer.getLine(i).translateToString(true)); }
  return lines.join("\\n");
}"""


def page_for(browser, base: str, user) -> object:
    context = browser.new_context(viewport={"width": 1360, "height": 860})
    context.add_cookies([{"name": "sessionid", "value": session_cookie(user), "url": base}])
    page = context.new_page()
    page.errors = []  # type: ignore[attr-defined]
    page.on("pageerror", lambda exc: page.errors.append(str(exc)))
    return page


def screen(page) -> str:
    return page.evaluate(SCREEN_TEXT)


@pytest.fixture
def vendor_grant(device_sshd, make_vendor, make_vendor_user, make_device, make_grant, make_zone):
    def make(**zone_kw):
        zone = make_zone(name="Packaging line", **zone_kw)
        user = make_vendor_user("vera", vendor=make_vendor("Acme Automation"))
        device = make_device("filler-plc", name="Filler PLC", zone=zone)
        pin_device(device, device_sshd)
        return user, device, make_grant(user, device)

    return make


def test_vendor_types_in_the_browser_and_the_device_answers(
    asgi_server, browser, vendor_grant, make_user, device_sshd
):
    user, device, grant = vendor_grant()
    base = asgi_server.url
    page = page_for(browser, base, user)

    page.goto(base + reverse("grant-detail", args=[grant.code]))
    page.click("#open-terminal")
    page.wait_for_url("**/terminal/")
    page.wait_for_selector("#terminal-state.pill-ok", timeout=20000)
    page.click("#terminal")
    page.keyboard.type("echo hello-airlock", delay=TYPING_DELAY)
    page.keyboard.press("Enter")
    # The typed line is echoed by the device's shell, then the command's output.
    wait_for(lambda: "\nhello-airlock" in screen(page), timeout=20)
    page.keyboard.type("echo the pump runs at $((1200 + 300)) rpm", delay=TYPING_DELAY)
    page.keyboard.press("Enter")
    wait_for(lambda: "the pump runs at 1500 rpm" in screen(page), timeout=20)
    # Paste from the clipboard (the Paste button), then copy a line back out.
    page.context.grant_permissions(["clipboard-read", "clipboard-write"], origin=base)
    page.evaluate("() => navigator.clipboard.writeText('echo pasted-$((7*6))')")
    page.click("#terminal-paste")
    wait_for(lambda: "echo pasted-$((7*6))" in screen(page), timeout=20)
    page.keyboard.press("Enter")
    wait_for(lambda: "\npasted-42" in screen(page), timeout=20)
    row = screen(page).split("\n").index("pasted-42")
    page.evaluate(f"() => window.airlockTerminal.selectLines({row}, {row})")
    page.click("#terminal-copy")
    assert page.evaluate("() => navigator.clipboard.readText()").strip() == "pasted-42"
    page.screenshot(path=str(SCREENSHOTS / "terminal.png"))

    live = Session.objects.get(user=user)
    assert live.client_kind == "browser" and live.ended_at is None
    # The zone's approver watches it live, read-only.
    approver = make_user("sam")
    group = ApproverGroup.objects.create(name="Line approvers")
    group.members.add(approver)
    ApprovalRule.objects.create(zone=device.zone, group=group, count=1)
    watcher = page_for(browser, base, approver)
    watcher.goto(base + reverse("live-sessions"))
    watcher.click(f"tr[data-session='{live.code}'] a:text('Watch')")
    watcher.wait_for_selector("#terminal-state.pill-ok", timeout=20000)
    # The screen so far comes from the process holding the session...
    wait_for(lambda: "pasted-42" in screen(watcher), timeout=20)
    # ...and what follows arrives live.
    page.keyboard.type("echo seen-by-$((2*3))-eyes", delay=TYPING_DELAY)
    page.keyboard.press("Enter")
    wait_for(lambda: "seen-by-6-eyes" in screen(watcher), timeout=20)
    watcher.screenshot(path=str(SCREENSHOTS / "terminal-watch.png"))
    # An approver ends the session; the vendor reads who and why.
    revoke(live, reason="the line restarts in 5 minutes", by=approver)
    page.wait_for_selector("#terminal-ended:not([hidden])", timeout=20000)
    ended = page.inner_text("#terminal-ended")
    assert ended.startswith("Session ended:")
    assert "the line restarts in 5 minutes" in ended
    assert page.inner_text("#terminal-state") == "Ended"
    watcher.wait_for_selector("#terminal-ended:not([hidden])", timeout=20000)
    assert "the line restarts in 5 minutes" in watcher.inner_text("#terminal-ended")
    page.screenshot(path=str(SCREENSHOTS / "terminal-ended.png"))
    assert page.errors == []

    session = wait_for(
        lambda: Session.objects.filter(user=user).exclude(recording_sha256="").first()
    )
    assert "the line restarts in 5 minutes" in session.end_reason
    typed = list(Command.objects.filter(session=session).values_list("text", flat=True))
    assert typed[:3] == [
        "echo hello-airlock",
        "echo the pump runs at $((1200 + 300)) rpm",
        "echo pasted-$((7*6))",
    ]

    # The auditor finds the session by the command and plays it back.
    auditor = make_user("audrey", is_auditor=True)
    review = page_for(browser, base, auditor)
    review.goto(base + reverse("session-list") + "?q=hello-airlock")
    assert review.locator("#sessions tbody tr[data-session]").count() == 1
    review.click(f"tr[data-session='{session.code}'] a")
    review.wait_for_selector("#player .ap-player, #player .ap-wrapper", timeout=15000)
    assert "Integrity verified" in review.inner_text("#integrity")
    assert "the line restarts in 5 minutes (ended by sam)" in review.inner_text(".session-facts")
    commands = review.locator("#timeline .event-command .text").all_inner_texts()
    assert commands[:2] == ["echo hello-airlock", "echo the pump runs at $((1200 + 300)) rpm"]
    review.locator("#timeline .event-command .jump").nth(1).click()
    review.wait_for_timeout(800)
    review.screenshot(path=str(SCREENSHOTS / "terminal-session-player.png"), full_page=True)
    assert review.errors == []


def test_zone_with_connection_otp_asks_for_a_fresh_code_first(asgi_server, browser, vendor_grant):
    user, device, grant = vendor_grant(requires_connection_otp=True)
    base = asgi_server.url
    page = page_for(browser, base, user)
    page.goto(base + reverse("terminal", args=[grant.code]))
    assert page.locator("#terminal").count() == 0
    page.fill("#id_code", "000000")
    page.click("#connection-otp button[type=submit]")
    assert "not right" in page.inner_text("#connection-otp")
    assert not Session.objects.exists()
    page.screenshot(path=str(SCREENSHOTS / "terminal-connection-otp.png"))
    # django-otp throttles the device for a second after a wrong code.
    page.wait_for_timeout(2100)
    page.fill("#id_code", totp_now(TOTPDevice.objects.get(user=user)))
    page.click("#connection-otp button[type=submit]")
    page.wait_for_selector("#terminal-state.pill-ok", timeout=20000)
    page.click("#terminal")
    page.keyboard.type("echo second-factor-ok", delay=TYPING_DELAY)
    page.keyboard.press("Enter")
    wait_for(lambda: "\nsecond-factor-ok" in screen(page), timeout=20)
    # Reloading the page does not reuse the code: the zone asks again.
    page.reload()
    assert page.locator("#connection-otp").count() == 1


def test_grant_for_another_vendor_is_404_and_a_denied_grant_explains(
    asgi_server, browser, vendor_grant, make_vendor_user
):
    user, device, grant = vendor_grant()
    base = asgi_server.url
    stranger = page_for(browser, base, make_vendor_user("mallory"))
    response = stranger.goto(base + reverse("terminal", args=[grant.code]))
    assert response.status == 404
    from django.utils import timezone

    grant.ends_at = timezone.now()
    grant.save()
    page = page_for(browser, base, user)
    response = page.goto(base + reverse("terminal", args=[grant.code]))
    assert response.status == 403
    assert "ended at" in page.inner_text("#terminal-denied")
