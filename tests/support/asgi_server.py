"""The portal as production serves it — uvicorn running broker.asgi with
websockets — in a thread of the test process, so it shares the test
database (tests use transaction=True). pytest-django's live_server speaks
only WSGI, which has no websockets."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest

from tests.conftest import free_port


class ASGIServer:
    def __init__(self) -> None:
        import uvicorn

        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        config = uvicorn.Config(
            "broker.asgi:application",
            host="127.0.0.1",
            port=self.port,
            ws="websockets-sansio",
            lifespan="off",
            log_level="warning",
            ws_max_size=1024 * 1024,
        )
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, name="test-uvicorn", daemon=True)

    def start(self) -> ASGIServer:
        self.thread.start()
        deadline = time.monotonic() + 20
        while not self.server.started:
            if not self.thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("uvicorn did not start")
            time.sleep(0.05)
        return self

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(20)


@pytest.fixture
def asgi_server(transactional_db: Any, settings: Any) -> Iterator[ASGIServer]:
    settings.ALLOWED_HOSTS = ["127.0.0.1", "localhost"]
    server = ASGIServer().start()
    yield server
    server.stop()
