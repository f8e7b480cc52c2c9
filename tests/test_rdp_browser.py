"""Browser RDP end to end in Debian's chromium: the portal served by uvicorn
(ASGI, websockets) in this process, noVNC from static/vendor/, the session's
own Xvnc + xfreerdp + ffmpeg, and a real RDP server (FreeRDP's shadow server
on Xvfb, its root window painted BACKGROUND) as the device."""

from __future__ import annotations

import os
import time

import pytest
from django.urls import reverse

from sessions.anomalies.models import Signal
from sessions.anomalies.response import raise_signal
from sessions.doors.rdp import consumer as rdp_consumer
from sessions.models import Session
from tests.conftest import SCREENSHOTS
from tests.support.asgi_server import asgi_server  # noqa: F401  (fixture)
from tests.support.browser_session import session_cookie
from tests.support.rdpserver import BACKGROUND, rdp_server, rdp_vendor  # noqa: F401  (fixtures)

pytestmark = [pytest.mark.browser, pytest.mark.rdp, pytest.mark.django_db(transaction=True)]

PIXEL = """([x, y]) => {
  const canvas = document.querySelector("#rdp-screen canvas");
  const data = canvas.getContext("2d").getImageData(x, y, 1, 1).data;
  return [data[0], data[1], data[2]];
}"""


def wait_for(predicate, timeout: float = 30, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.1)


def close_to(rgb: list[int], expected: tuple[int, int, int], tolerance: int = 12) -> bool:
    return all(abs(a - b) <= tolerance for a, b in zip(rgb, expected))


def test_vendor_opens_the_remote_desktop_types_into_it_and_a_signal_ends_it(
    asgi_server, browser, rdp_vendor, rdp_server, make_user
):
    user, device, grant = rdp_vendor()
    base = asgi_server.url
    context = browser.new_context(viewport={"width": 1360, "height": 900})
    context.add_cookies([{"name": "sessionid", "value": session_cookie(user), "url": base}])
    page = context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))

    page.goto(base + reverse("grant-detail", args=[grant.code]))
    page.click("#open-remote-desktop")
    page.wait_for_url("**/desktop/")
    page.wait_for_selector('#rdp-screen[data-connected="1"]', timeout=60_000)
    # The device's background colour, away from its xterm (remote 700,500).
    wait_for(
        lambda: close_to(page.evaluate(PIXEL, [700, 500]), BACKGROUND),
        30,
        "the remote desktop's background on the canvas",
    )
    page.screenshot(path=str(SCREENSHOTS / "rdp-remote-desktop.png"))

    page.mouse.click(*canvas_point(page, 150, 100))
    page.keyboard.type("typed-in-chromium")
    page.keyboard.press("Enter")
    wait_for(lambda: "typed-in-chromium" in rdp_server.typed(), 30, "the typed line on the device")

    # Someone allowed to watch (an auditor here) sees the same desktop read-only.
    live = next(iter(rdp_consumer.RDP_SESSIONS.values()))
    watcher = make_user("otto", is_auditor=True)
    watch_context = browser.new_context(viewport={"width": 1360, "height": 900})
    watch_context.add_cookies(
        [{"name": "sessionid", "value": session_cookie(watcher), "url": base}]
    )
    watching = watch_context.new_page()
    watching.goto(base + reverse("remote-desktop-watch", args=[live.code]))
    watching.wait_for_selector('#rdp-screen[data-connected="1"]', timeout=60_000)
    wait_for(
        lambda: close_to(watching.evaluate(PIXEL, [700, 500]), BACKGROUND),
        30,
        "the watcher's canvas",
    )
    assert watching.locator("#rdp-cad").count() == 0
    watching.screenshot(path=str(SCREENSHOTS / "rdp-approver-watching.png"))
    time.sleep(3)  # a few seconds of video to play back later
    pgid = live.desktop.pgid
    session = Session.objects.get(user=user)
    raise_signal(
        origin=Signal.Origin.DETECTOR,
        kind="ot_anomaly",
        severity="high",
        detail="unexpected S7 write",
        device=device,
        sessions=[session],
    )
    page.wait_for_selector("#rdp-ended:not([hidden])", timeout=30_000)
    reason = page.inner_text("#rdp-ended-reason")
    page.screenshot(path=str(SCREENSHOTS / "rdp-ended-by-signal.png"))
    wait_for(lambda: not group_alive(pgid), 30, "the process group to go")
    watching.wait_for_selector("#rdp-ended:not([hidden])", timeout=30_000)
    watch_context.close()
    # Both sides close first; the row (with the video's hash) is written after.
    wait_for(
        lambda: Session.objects.filter(pk=session.pk).exclude(ended_at=None).exists(),
        30,
        "the session row to be closed",
    )
    assert reason
    assert errors == []
    context.close()

    # An auditor plays the recording; the timeline holds the typed line and the signal.
    auditor = make_user("audrey", is_auditor=True)
    review = browser.new_context(viewport={"width": 1360, "height": 900})
    review.add_cookies([{"name": "sessionid", "value": session_cookie(auditor), "url": base}])
    player = review.new_page()
    player.goto(base + reverse("session-detail", args=[session.code]))
    player.screenshot(path=str(SCREENSHOTS / "rdp-review-playback.png"))
    assert player.locator("video#player").count() == 1, player.inner_text("#integrity")
    player.wait_for_function(
        "() => { const v = document.querySelector('video#player');"
        " return v && v.readyState >= 2 && v.videoWidth > 0; }",
        timeout=30_000,
    )
    timeline = player.inner_text("#timeline")
    assert "typed-in-chromium" in timeline and "ot_anomaly" in timeline
    player.click("#timeline button.jump")
    player.wait_for_function(
        "() => document.querySelector('video#player').currentTime > 0 "
        "|| !document.querySelector('video#player').paused",
        timeout=30_000,
    )
    player.screenshot(path=str(SCREENSHOTS / "rdp-review-playback.png"))
    review.close()


def canvas_point(page, x: int, y: int) -> tuple[float, float]:
    """Page coordinates of framebuffer point (x, y) on noVNC's scaled canvas."""
    box = page.evaluate("""() => {
      const c = document.querySelector("#rdp-screen canvas");
      const r = c.getBoundingClientRect();
      return [r.left, r.top, r.width / c.width, r.height / c.height];
    }""")
    return box[0] + x * box[2], box[1] + y * box[3]


def group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    return True
