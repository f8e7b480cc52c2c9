"""What the portal prints about the SSH gateway: its public address, its host
key fingerprint (so vendors can check the first connection), and the exact
ssh/scp/sftp command lines for a grant."""

from __future__ import annotations

from functools import lru_cache
from typing import Any

from django import template
from django.conf import settings

register = template.Library()


@lru_cache(maxsize=4)
def _fingerprint(path: str) -> tuple[str, str]:
    from sessions.doors.ssh.gateway import host_key_fingerprint, host_key_line

    return host_key_fingerprint(), host_key_line()


@register.simple_tag
def gateway_info(grant: Any = None, username: str = "") -> dict[str, Any]:
    """{% gateway_info grant user.username as gw %}: host, port, fingerprint,
    known_hosts line and (with a grant) the commands."""
    from sessions.doors.ssh.gateway import host_key_path

    host, port = settings.GATEWAY_PUBLIC_HOST, settings.GATEWAY_PUBLIC_PORT
    try:
        fingerprint, key_line = _fingerprint(str(host_key_path()))
    except (OSError, ValueError):
        fingerprint, key_line = "", ""
    target = f"[{host}]:{port}" if port != 22 else host
    info: dict[str, Any] = {
        "host": host,
        "port": port,
        "fingerprint": fingerprint,
        "known_hosts": f"{target} {key_line}" if key_line else "",
    }
    if grant is not None:
        login = f"{username or grant.user.username}+{grant.device.slug}"
        info.update(
            {
                "login": login,
                "ssh": f"ssh -p {port} {login}@{host}",
                "scp_up": f"scp -P {port} FILE {login}@{host}:PATH",
                "scp_down": f"scp -P {port} {login}@{host}:PATH .",
                "sftp": f"sftp -P {port} {login}@{host}",
                "forward": (
                    f"ssh -N -L 127.0.0.1:LOCALPORT:{grant.device.slug}:DEVICEPORT -p {port} "
                    f"{login}@{host}"
                ),
            }
        )
    return info
