"""The asyncio scraper against a real HTTP server: chunked and sized bodies, errors, timeouts."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from adaspec.controlplane.fetch import ScrapeError, fetch_many, http_get


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def do_GET(self) -> None:
        if self.path == "/chunked":
            self.send_response(200)
            self.send_header("Transfer-Encoding", "chunked")
            self.end_headers()
            for part in (b"adaspec_generation_", b"tokens_total 7\n"):
                self.wfile.write(b"%x\r\n%s\r\n" % (len(part), part))
            self.wfile.write(b"0\r\n\r\n")
        elif self.path == "/sized":
            body = b"adaspec_generation_tokens_total 8\n"
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)
        elif self.path == "/slow":
            time.sleep(1.0)
            self.send_error(500)
        else:
            self.send_error(503)


@pytest.fixture
def base() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def test_bodies(base: str) -> None:
    assert asyncio.run(http_get(f"{base}/chunked", 5)) == "adaspec_generation_tokens_total 7\n"
    assert asyncio.run(http_get(f"{base}/sized", 5)) == "adaspec_generation_tokens_total 8\n"


def test_errors_are_returned_per_url(base: str) -> None:
    urls = [f"{base}/sized", f"{base}/missing", f"{base}/slow", "http://127.0.0.1:1/metrics", "ftp://x/y"]
    out = asyncio.run(fetch_many(urls, timeout_s=0.3, concurrency=4))
    assert out[urls[0]] == "adaspec_generation_tokens_total 8\n"
    assert isinstance(out[urls[1]], ScrapeError) and "HTTP 503" in str(out[urls[1]])
    assert isinstance(out[urls[2]], TimeoutError)
    assert isinstance(out[urls[3]], OSError)
    assert isinstance(out[urls[4]], ScrapeError)
