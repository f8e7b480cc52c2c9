"""Recording review: who sees which session, search over commands and file
transfers, filters, and the player's integrity check (in Debian's chromium
for the pages auditors use)."""

from __future__ import annotations

import io
from datetime import timedelta
from pathlib import Path

import pytest
from django.core.management import call_command
from django.urls import reverse
from django.utils import timezone

from broker.models import AuditEvent
from sessions.anomalies.models import Signal
from sessions.evidence.review import Filters, integrity, search
from sessions.live.recording import recordings_dir
from sessions.models import Session
from tests.conftest import SCREENSHOTS
from tests.support.recordings import recorded_session
from tests.support.sshd import wait_for


@pytest.fixture
def plant(
    make_vendor,
    make_vendor_user,
    make_device,
    make_grant,
    make_zone,
    make_group,
    make_approver,
    make_user,
):
    """Two vendors, two zones, an approver of one zone and an auditor."""
    line = make_zone(name="Packaging line", slug="packaging")
    boiler = make_zone(name="Boiler house", slug="boiler")
    group = make_group("Packaging approvers")
    from broker.models import ApprovalRule

    ApprovalRule.objects.create(zone=line, group=group, count=1)
    acme, other = make_vendor("Acme Automation"), make_vendor("Other Controls")
    alice = make_vendor_user("alice", vendor=acme)
    bob = make_vendor_user("bob", vendor=other)
    plc = make_device("filler-plc", zone=line, name="Filler PLC")
    hmi = make_device("boiler-hmi", zone=boiler, name="Boiler HMI")
    s1 = recorded_session(
        alice,
        plc,
        make_grant(alice, plc),
        lines=("status", "echo hello-airlock", "read_register 40001"),
        files=(("/plc/recipes/line2.csv", "download"),),
    )
    s2 = recorded_session(
        bob,
        hmi,
        make_grant(bob, hmi),
        lines=("show alarms",),
        reason="terminated by sam: unexpected firmware tool",
        client_kind="native",
    )
    Signal.objects.create(
        origin="detector",
        kind="command_rule",
        severity="high",
        detail="firmware flash tool",
        device=hmi,
    ).sessions.add(s2)
    return {
        "alice": alice,
        "bob": bob,
        "s1": s1,
        "s2": s2,
        "line": line,
        "boiler": boiler,
        "approver": make_approver("olga", groups=[group]),
        "auditor": make_user("audrey", is_auditor=True),
    }


# --- scoping ---------------------------------------------------------------------------


@pytest.mark.django_db
def test_vendor_sees_only_own_sessions_and_another_vendors_code_is_404(plant, verified_client):
    client = verified_client(plant["alice"])
    listing = client.get(reverse("session-list")).content.decode()
    assert str(plant["s1"].code) in listing and str(plant["s2"].code) not in listing
    assert client.get(reverse("session-detail", args=[plant["s1"].code])).status_code == 200
    for name in ("session-detail", "session-recording", "session-evidence", "session-watch"):
        assert client.get(reverse(name, args=[plant["s2"].code])).status_code == 404


@pytest.mark.django_db
def test_approver_sees_the_sessions_of_their_zones(plant, verified_client):
    client = verified_client(plant["approver"])
    assert client.get(reverse("session-detail", args=[plant["s1"].code])).status_code == 200
    assert client.get(reverse("session-detail", args=[plant["s2"].code])).status_code == 404


@pytest.mark.django_db
def test_auditor_sees_every_session(plant, verified_client):
    client = verified_client(plant["auditor"])
    listing = client.get(reverse("session-list")).content.decode()
    assert str(plant["s1"].code) in listing and str(plant["s2"].code) in listing


@pytest.mark.django_db
@pytest.mark.parametrize(
    "path",
    [
        "/sessions/../../etc/passwd/",
        "/sessions/..%2F..%2Fetc%2Fpasswd/",
        "/sessions/%2e%2e%2fsecret_key/recording.cast",
        "/sessions/not-a-uuid/",
        "/sessions/00000000-0000-0000-0000-000000000000/",
        "/sessions/00000000-0000-0000-0000-000000000000/recording.cast",
        "/sessions/..%2fvar%2fsigning_key/evidence.zip",
    ],
)
def test_path_like_and_unknown_codes_are_404(plant, verified_client, path):
    client = verified_client(plant["auditor"])
    response = client.get(path)
    assert response.status_code == 404
    assert b"BEGIN" not in response.content and b"root:" not in response.content


@pytest.mark.django_db
def test_a_recording_name_outside_the_store_is_never_served(plant, verified_client):
    session = plant["s1"]
    Session.objects.filter(pk=session.pk).update(recording="../../signing_key")
    session.refresh_from_db()
    assert integrity(session).state == "missing"
    client = verified_client(plant["auditor"])
    response = client.get(reverse("session-recording", args=[session.code]))
    assert response.status_code == 409
    assert b"missing" in response.content


@pytest.mark.django_db
def test_missing_recording_file_is_a_clear_message(plant, verified_client):
    (recordings_dir() / plant["s1"].recording).unlink()
    client = verified_client(plant["auditor"])
    page = client.get(reverse("session-detail", args=[plant["s1"].code]))
    assert page.status_code == 200
    assert "missing from the recordings store" in page.content.decode()


# --- search and filters --------------------------------------------------------------------


@pytest.mark.django_db
@pytest.mark.parametrize(
    "params, expected",
    [
        ({"q": "hello-airlock"}, {"s1"}),
        ({"q": "HELLO-AIRLOCK"}, {"s1"}),
        ({"q": "recipes/line2"}, {"s1"}),
        ({"q": "alarms"}, {"s2"}),
        ({"q": "nothing-like-this"}, set()),
        ({"vendor": "Acme"}, {"s1"}),
        ({"user": "bob"}, {"s2"}),
        ({"device": "filler"}, {"s1"}),
        ({"zone": "boiler"}, {"s2"}),
        ({"protocol": "ssh"}, {"s1", "s2"}),
        ({"protocol": "rdp"}, set()),
        ({"end_reason": "terminated"}, {"s2"}),
        ({"has_signals": "1"}, {"s2"}),
        ({"since": "2000-01-01", "until": "2000-01-02"}, set()),
    ],
)
def test_filters_and_search_find_the_right_sessions(plant, params, expected):
    found = {
        name
        for name in ("s1", "s2")
        if search(plant["auditor"], Filters.from_query(params)).filter(pk=plant[name].pk).exists()
    }
    assert found == expected


@pytest.mark.django_db
def test_time_range_uses_the_start_day(plant):
    today = timezone.localdate()
    f = Filters.from_query({"since": today.isoformat(), "until": today.isoformat()})
    assert search(plant["auditor"], f).count() == 2
    f = Filters.from_query({"since": (today + timedelta(days=1)).isoformat()})
    assert search(plant["auditor"], f).count() == 0


@pytest.mark.django_db
def test_bad_filter_values_are_reported_not_crashed(plant, verified_client):
    client = verified_client(plant["auditor"])
    response = client.get(
        reverse("session-list"), {"since": "yesterday", "protocol": "telnet", "q": "x" * 5000}
    )
    assert response.status_code == 200
    text = response.content.decode()
    assert "Since is not a date" in text and "Unknown protocol" in text


@pytest.mark.django_db
def test_search_does_not_leak_other_vendors_sessions(plant):
    found = search(plant["alice"], Filters.from_query({"q": "alarms"}))
    assert not found.exists()


@pytest.mark.postgres
@pytest.mark.django_db
def test_full_text_search_on_postgresql_matches_words_in_any_order(plant):
    found = search(plant["auditor"], Filters.from_query({"q": "40001 read_register"}))
    assert list(found.values_list("pk", flat=True)) == [plant["s1"].pk]


# --- integrity ------------------------------------------------------------------------------


@pytest.mark.django_db
def test_untouched_recording_verifies_against_row_and_chain(plant):
    check = integrity(plant["s1"])
    assert check.ok and check.state == "verified"
    assert check.sha256 == plant["s1"].recording_sha256 == check.chain_sha256


@pytest.mark.django_db
def test_row_hash_edited_to_match_an_edited_file_is_still_caught_by_the_chain(plant):
    import hashlib

    session = plant["s1"]
    path = recordings_dir() / session.recording
    original = path.read_bytes()
    path.write_bytes(original.replace(b"hello-airlock", b"hello-airlocK"))
    assert path.read_bytes() != original
    Session.objects.filter(pk=session.pk).update(
        recording_sha256=hashlib.sha256(path.read_bytes()).hexdigest()
    )
    session.refresh_from_db()
    check = integrity(session)
    assert check.state == "tampered"
    assert "audit chain" in check.message


@pytest.mark.django_db
def test_tamper_view_is_audited(plant, verified_client):
    path = recordings_dir() / plant["s1"].recording
    data = bytearray(path.read_bytes())
    data[-5] ^= 0x01
    path.write_bytes(bytes(data))
    client = verified_client(plant["auditor"])
    page = client.get(reverse("session-detail", args=[plant["s1"].code])).content.decode()
    assert "Tamper warning" in page
    assert 'id="player"' not in page
    assert AuditEvent.objects.filter(
        action="session.tamper_detected", target=f"session {plant['s1'].code}"
    ).exists()


# --- in the browser ----------------------------------------------------------------------------


def signed_in_page(browser, base: str, user) -> object:
    """A browser page whose cookie is a fully signed-in (OTP-verified) session."""
    from tests.support.browser_session import session_cookie

    context = browser.new_context(viewport={"width": 1440, "height": 900})
    context.add_cookies([{"name": "sessionid", "value": session_cookie(user), "url": base}])
    page = context.new_page()
    page.on("console", lambda msg: msg.type == "error" and print("console:", msg.text))
    return page


@pytest.mark.browser
@pytest.mark.django_db(transaction=True)
def test_auditor_searches_opens_plays_and_sees_the_tamper_warning(plant, live_server, browser):
    base = live_server.url
    page = signed_in_page(browser, base, plant["auditor"])
    page.goto(base + reverse("session-list"))
    page.fill("#f-q", "hello-airlock")
    page.click("#session-filters button.primary")
    page.wait_for_url("**q=hello-airlock**")
    rows = page.locator("#sessions tbody tr[data-session]")
    assert rows.count() == 1
    assert rows.first.get_attribute("data-session") == str(plant["s1"].code)
    assert page.locator(".hit", has_text="echo hello-airlock").count() == 1
    page.fill("#f-q", "")
    page.click("#session-filters button.primary")
    page.wait_for_selector("#sessions tbody tr[data-session] >> nth=1")
    page.screenshot(path=str(SCREENSHOTS / "review-list.png"), full_page=True)

    page.goto(base + reverse("session-detail", args=[plant["s1"].code]))
    assert "Integrity verified" in page.inner_text("#integrity")
    page.wait_for_selector("#player .ap-player, #player .ap-wrapper", timeout=15000)
    commands = page.locator("#timeline .event-command .text").all_inner_texts()
    assert commands == ["status", "echo hello-airlock", "read_register 40001"]
    assert page.locator("#timeline .event-file .text").inner_text() == "/plc/recipes/line2.csv"
    # Jumping to a command seeks the player to its time.
    target = float(page.locator("#timeline .event-command .jump").nth(1).get_attribute("data-t"))
    page.locator("#timeline .event-command .jump").nth(1).click()
    wait_for(
        lambda: page.evaluate(
            "() => window.airlockPlayer && window.airlockPlayer.getCurrentTime() > 0"
        ),
        timeout=15,
    )
    at = page.evaluate("window.airlockPlayer.getCurrentTime()")
    assert at >= target - 0.2
    page.select_option("#speed", "2")
    page.wait_for_selector("#player .ap-player, #player .ap-wrapper", timeout=15000)
    page.locator("#timeline .event-command .jump").nth(2).click()
    page.wait_for_timeout(600)
    page.screenshot(path=str(SCREENSHOTS / "review-player.png"), full_page=True)

    # The auditor exports signed evidence; it verifies offline with the
    # public key the Sessions page shows.
    with page.expect_download() as download_info:
        page.click("#export-evidence")
    bundle = Path(download_info.value.path())
    page.goto(base + reverse("session-list"))
    public_key = page.inner_text("#public-key")
    out = io.StringIO()
    call_command("verifyevidence", str(bundle), "--public-key", public_key, stdout=out)
    assert "Verified" in out.getvalue()

    # One byte of the recording changes on disk: the page warns and does not play.
    path = recordings_dir() / plant["s1"].recording
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x20
    path.write_bytes(bytes(data))
    page.goto(base + reverse("session-detail", args=[plant["s1"].code]))
    warning = page.inner_text("#integrity")
    assert "Tamper warning" in warning
    assert page.locator("#player").count() == 0
    assert page.locator("#player-blocked").is_visible()
    page.screenshot(path=str(SCREENSHOTS / "review-tamper-warning.png"), full_page=True)

    # Another vendor's session is a 404 for a vendor, in the browser too.
    vendor_page = signed_in_page(browser, base, plant["alice"])
    response = vendor_page.goto(base + reverse("session-detail", args=[plant["s2"].code]))
    assert response.status == 404


# --- browser RDP sessions: a video and an input log ----------------------------------------


@pytest.mark.django_db
def test_rdp_video_recording_is_served_as_video_after_the_same_check(plant, verified_client):
    import hashlib

    from broker import audit
    from sessions.live.core import open_session_row

    alice, device = plant["alice"], plant["s1"].device
    session = open_session_row(
        user=alice,
        device=device,
        grant=plant["s1"].grant,
        source_ip="192.0.2.9",
        client_kind="browser",
        protocol="rdp",
    )
    session.recording = session.recording.removesuffix(".cast") + ".webm"
    video = b"\x1aE\xdf\xa3 not really a video, but bytes to hash"
    path = recordings_dir() / session.recording
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(video)
    sha = hashlib.sha256(video).hexdigest()
    Session.objects.filter(pk=session.pk).update(recording=session.recording)
    session.refresh_from_db()
    session.close("the vendor disconnected", recording_sha256=sha)
    audit.record(
        "session.end",
        target=f"session {session.code}",
        data={"recording_sha256": sha, "recording": session.recording},
    )
    # The input log next to the video, hashed into the row and the chain.
    from sessions.doors.rdp.consumer import finish_input_log, input_log_name

    log = b'{"version": 2}\n[0.5, "m", "clipboard to device: 3 characters"]\n'
    (recordings_dir() / input_log_name(session.recording)).write_bytes(log)
    finish_input_log(session.pk, hashlib.sha256(log).hexdigest())
    client = verified_client(plant["auditor"])
    page = client.get(reverse("session-detail", args=[session.code])).content.decode()
    assert 'data-kind="video"' in page and "Integrity verified" in page
    response = client.get(reverse("session-recording", args=[session.code]))
    assert response["Content-Type"] == "video/webm"
    assert response.content == video
    assert response["Accept-Ranges"] == "bytes"

    # Seeking: browsers ask for byte ranges of the (verified) video.
    url = reverse("session-recording", args=[session.code])
    part = client.get(url, HTTP_RANGE="bytes=4-9")
    assert part.status_code == 206
    assert part.content == video[4:10]
    assert part["Content-Range"] == f"bytes 4-9/{len(video)}"
    tail = client.get(url, HTTP_RANGE="bytes=-5")
    assert tail.status_code == 206 and tail.content == video[-5:]
    rest = client.get(url, HTTP_RANGE="bytes=10-")
    assert rest.status_code == 206 and rest.content == video[10:]
    beyond = client.get(url, HTTP_RANGE=f"bytes={len(video)}-")
    assert beyond.status_code == 416 and beyond["Content-Range"] == f"bytes */{len(video)}"
    # A range of a tampered recording is refused like the whole of it.
    path.write_bytes(video[:-1] + b"!")
    assert client.get(url, HTTP_RANGE="bytes=0-3").status_code == 409


@pytest.mark.parametrize(
    "header, size, expected",
    [
        ("", 100, None),
        ("bytes=0-0", 100, (0, 0)),
        ("bytes=90-200", 100, (90, 99)),
        ("bytes=-10", 100, (90, 99)),
        ("bytes=-500", 100, (0, 99)),
        ("bytes=100-", 100, (-1, -1)),
        ("bytes=-0", 100, (-1, -1)),
        ("bytes=0-1,5-6", 100, None),  # several ranges: the whole body
        ("bytes=9-3", 100, None),  # not a valid range: ignored
        ("bytes=a-b", 100, None),
        ("items=0-3", 100, None),
    ],
)
def test_byte_range_parsing(header, size, expected):
    from sessions.pages.review import byte_range

    assert byte_range(header, size) == expected


@pytest.mark.django_db
def test_player_and_terminal_pages_keep_scripts_to_self(plant, verified_client, make_grant):
    def directive(response, name: str) -> set[str]:
        policy = response["Content-Security-Policy"]
        part = next(p for p in policy.split(";") if p.strip().startswith(name + " "))
        return set(part.split()[1:])

    client = verified_client(plant["auditor"])
    player = client.get(reverse("session-detail", args=[plant["s1"].code]))
    assert directive(player, "script-src") == {"'self'", "'wasm-unsafe-eval'"}
    assert directive(player, "style-src") == {"'self'"}
    vendor = verified_client(plant["alice"])
    terminal = vendor.get(reverse("terminal", args=[plant["s1"].grant.code]))
    assert terminal.status_code == 200
    assert directive(terminal, "script-src") == {"'self'"}
    # xterm.js draws with <style> elements it creates; only style is relaxed.
    assert directive(terminal, "style-src") == {"'self'", "'unsafe-inline'"}
    listing = client.get(reverse("session-list"))
    assert directive(listing, "script-src") == {"'self'"}


@pytest.mark.django_db
def test_list_counts_commands_and_signals_per_session(plant):
    rows = {s.pk: s for s in search(plant["auditor"], Filters())}
    assert (rows[plant["s1"].pk].command_count, rows[plant["s1"].pk].signal_count) == (3, 0)
    assert (rows[plant["s2"].pk].command_count, rows[plant["s2"].pk].signal_count) == (1, 1)
