"""Websocket close codes of every browser door, one table.

The pages explain them (static/airlock/terminal.js, the desktop and watch
pages); the terminal, the remote desktop and the watch socket all close with
these, so a code means the same thing whichever door sent it.
"""

from __future__ import annotations

# Refused before or at the handshake (origin, OTP, authorize(), no such grant).
CLOSE_REFUSED = 4403
# The session ended (vendor, device, revocation, expiry).
CLOSE_ENDED = 4000
# The browser sent something malformed.
CLOSE_BAD_MESSAGE = 4400
# A frame over the door's limit (RFC 6455 "message too big").
CLOSE_TOO_BIG = 1009
