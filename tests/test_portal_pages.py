"""The role home pages, the auditors' audit trail page, error pages, and
the audit of admin changes to people."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.db import connection
from django.urls import reverse
from django.utils import timezone

from broker import audit
from broker.models import AuditEvent, User

pytestmark = pytest.mark.django_db


def test_the_vendor_home_says_what_to_do_next(verified_client, make_vendor, make_vendor_user):
    user = make_vendor_user("alice", vendor=make_vendor("Acme Automation"))
    page = verified_client(user).get(reverse("home"))
    html = page.content.decode()
    assert "Vendor · Acme Automation" in html
    assert "Ask for access to a device" in html
    assert "Auditor" not in html and "Approver ·" not in html


def test_the_approver_home_names_the_groups(verified_client, make_approver, make_group):
    user = make_approver("bob", groups=[make_group("Plant operations")])
    html = verified_client(user).get(reverse("home")).content.decode()
    assert "Approver · Plant operations" in html
    assert "approve" in html.lower()


def test_the_auditor_home_links_the_audit_trail(verified_client, make_user):
    html = (
        verified_client(make_user("audrey", is_auditor=True)).get(reverse("home")).content.decode()
    )
    assert "You can read everything and change nothing" in html
    assert reverse("audit-trail") in html


def test_the_admin_home_links_inviting_and_the_admin(verified_client, make_user):
    html = verified_client(make_user("root", is_staff=True)).get(reverse("home")).content.decode()
    assert reverse("invite") in html and reverse("admin:index") in html


def test_someone_with_two_roles_sees_both_sections(verified_client, make_approver, make_group):
    user = make_approver("carol", groups=[make_group("OT security")], is_auditor=True)
    html = verified_client(user).get(reverse("home")).content.decode()
    assert "Approver · OT security" in html and "Auditor" in html


def test_someone_without_a_role_is_told_so(verified_client, make_user):
    html = verified_client(make_user("nobody")).get(reverse("home")).content.decode()
    assert "Your account has no role in Airlock yet" in html


def test_auditors_see_the_audit_trail_and_its_chain_is_intact(verified_client, make_user):
    audit.record("login.failed", actor="mallory", target="user:mallory", source_ip="192.0.2.9")
    page = verified_client(make_user("audrey", is_auditor=True)).get(reverse("audit-trail"))
    assert page.status_code == 200
    html = page.content.decode()
    assert "The audit chain is intact" in html
    assert "mallory" in html and "192.0.2.9" in html


def test_the_audit_trail_filters_by_actor_action_and_date(verified_client, make_user):
    now = timezone.now()
    audit.record("login.failed", actor="mallory", target="user:mallory", at=now - timedelta(days=3))
    audit.record("login.failed", actor="eve", target="user:eve", at=now)
    audit.record("invitation.sent", actor="root", target="invitation:x", at=now)
    client = verified_client(make_user("audrey", is_auditor=True))

    def actors(**params):
        page = client.get(reverse("audit-trail"), params)
        return {e.actor for e in page.context["page"]}

    assert actors(actor="mallory") == {"mallory"}
    assert actors(action="login.failed") == {"mallory", "eve"}
    assert "root" in actors(action="invitation.")
    assert "mallory" not in actors(
        action="login.", since=(now - timedelta(days=1)).date().isoformat()
    )
    assert actors(action="login.", until=(now - timedelta(days=2)).date().isoformat()) == {
        "mallory"
    }


def test_the_audit_trail_rejects_a_date_range_backwards(verified_client, make_user):
    client = verified_client(make_user("audrey", is_auditor=True))
    page = client.get(reverse("audit-trail"), {"since": "2026-01-02", "until": "2026-01-01"})
    assert b"The start date is after the end date" in page.content


def test_the_audit_trail_page_shows_a_broken_chain(verified_client, make_user):
    event = audit.record("login.failed", actor="mallory", target="user:mallory")
    # Tamper below the ORM (AuditEvent refuses updates), as an intruder would.
    with connection.cursor() as cursor:
        cursor.execute(
            f"UPDATE {AuditEvent._meta.db_table} SET actor = %s WHERE id = %s",
            ["someone-else", event.pk],
        )
    html = (
        verified_client(make_user("audrey", is_auditor=True))
        .get(reverse("audit-trail"))
        .content.decode()
    )
    assert "The audit chain is broken" in html
    assert f"event {event.pk}" in html


def test_vendors_and_approvers_cannot_read_the_audit_trail(verified_client, make_vendor_user):
    response = verified_client(make_vendor_user("alice")).get(reverse("audit-trail"))
    assert response.status_code == 403
    assert b"The audit trail is for auditors" in response.content


def test_admin_changes_to_users_are_audited_without_values(
    verified_client, make_user, make_vendor_user
):
    root = make_user("root", is_staff=True, is_superuser=True)
    target = make_vendor_user("alice")
    client = verified_client(root)
    response = client.post(
        reverse("admin:broker_user_changelist"),
        {
            "action": "deactivate_users",
            "_selected_action": [target.pk],
        },
    )
    assert response.status_code == 302
    assert not User.objects.get(pk=target.pk).is_active
    event = AuditEvent.objects.get(action="user.changed")
    assert event.actor == "root" and event.target == "user:alice"
    assert event.data == {"changed": ["is_active"]}


def test_admin_user_edit_is_audited_by_field_name(verified_client, make_user):
    root = make_user("root", is_staff=True, is_superuser=True)
    target = make_user("bob")
    client = verified_client(root)
    url = reverse("admin:broker_user_change", args=[target.pk])
    data = {
        "username": "bob",
        "email": "bob@plant.example",
        "is_auditor": "on",
        "is_active": "on",
        "ApproverGroup_members-TOTAL_FORMS": "0",
        "ApproverGroup_members-INITIAL_FORMS": "0",
    }
    response = client.post(url, data)
    assert response.status_code == 302, response.content.decode()[:2000]
    event = AuditEvent.objects.get(action="user.changed")
    assert "is_auditor" in event.data["changed"]
    assert "bob@plant.example" not in str(event.data)


def test_the_not_found_page_is_a_sentence(verified_client, make_vendor_user):
    response = verified_client(make_vendor_user("alice")).get("/nothing-here/")
    assert response.status_code == 404
    assert b"There is nothing here, or nothing your account may see" in response.content


def test_the_server_error_page_renders_without_a_request_context():
    from django.template.loader import get_template

    html = get_template("500.html").render()
    assert "Something went wrong on our side" in html
