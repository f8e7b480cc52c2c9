"""Reading the kernel's TCP table, so a test can assert that a connection
is really closed (not that some object says so)."""

from __future__ import annotations

from pathlib import Path

ESTABLISHED = "01"


def established_to(port: int) -> int:
    """How many established TCP connections on this host have `port` as
    their remote port (i.e. are client sockets connected to that port)."""
    count = 0
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        path = Path(table)
        if not path.exists():
            continue
        for line in path.read_text().splitlines()[1:]:
            fields = line.split()
            remote, state = fields[2], fields[3]
            if state == ESTABLISHED and int(remote.rsplit(":", 1)[1], 16) == port:
                count += 1
    return count
