"""The fetcher against a server that answers with broken or hostile headers, on a real socket:
each is a clear FetchError for that URL, never a traceback that ends the crawl, and an answer too
large is fetched once, not once per retry."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

import pytest

from crawler.errors import FetchError, HttpError
from crawler.fetch import Fetcher
from crawler.polite import retry_after_seconds


@contextmanager
def raw_server(
    head: bytes, body: bytes = b"", drip_s: float = 0.0, drip_head: bool = False
) -> Iterator[tuple[str, list[int]]]:
    """A server that answers every request with exactly these header lines and body, the body (or
    with `drip_head` the headers too) a byte every `drip_s` when given; yields its address and a
    list counting the requests it read (robots.txt gets a 404)."""
    listener = socket.create_server(("127.0.0.1", 0))
    asked = [0]

    def serve() -> None:
        while True:
            try:
                conn, _ = listener.accept()
            except OSError:
                return
            with conn:
                request = conn.recv(65536)
                if b"/robots.txt" in request.split(b"\r\n", 1)[0]:
                    conn.sendall(b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
                    continue
                asked[0] += 1
                whole_head = head + b"\r\nConnection: close\r\n\r\n"
                if not drip_head:
                    conn.sendall(whole_head + (b"" if drip_s else body))
                for byte in (whole_head if drip_head else b"") + (body if drip_s else b""):
                    time.sleep(drip_s)
                    try:
                        conn.sendall(bytes([byte]))
                    except OSError:  # the client gave up
                        break

    threading.Thread(target=serve, daemon=True).start()
    try:
        yield f"127.0.0.1:{listener.getsockname()[1]}", asked
    finally:
        listener.close()


def _fetcher(host: str) -> Fetcher:
    return Fetcher(frozenset({host}), "reviewlens-test", default_rate=100.0, retries=2, backoff_s=0.01)


@pytest.mark.parametrize(
    ("head", "said"),
    [
        (b"HTTP/1.1 200 OK\r\nContent-Length: abc", "no length"),
        (b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nContent-Length: 7", "Content-Length"),
        (b"HTTP/1.1 200 OK\r\nContent-Length: -5", "no length"),
    ],
    ids=["abc", "two that differ", "negative"],
)
def test_a_content_length_that_is_no_length_is_a_clear_error(head: bytes, said: str) -> None:
    with raw_server(head, b"hello") as (host, _), pytest.raises(FetchError, match=said) as failed:
        _fetcher(host).get(f"http://{host}/page")
    assert failed.value.url.endswith("/page")


def test_an_answer_too_large_is_fetched_once_not_once_per_retry() -> None:
    too_large = pytest.raises(FetchError, match="too large")
    with raw_server(b"HTTP/1.1 200 OK\r\nContent-Length: 5000", b"x" * 5000) as (host, asked), too_large:
        _fetcher(host).get(f"http://{host}/page", max_bytes=1000)
    assert asked == [1]


def test_a_retry_after_of_other_digits_is_no_pause() -> None:
    assert retry_after_seconds("²") is None and retry_after_seconds("٣") is None and retry_after_seconds("3") == 3.0
    head = b"HTTP/1.1 429 Too Many Requests\r\nRetry-After: \xc2\xb2\r\nContent-Length: 0"
    with raw_server(head) as (host, asked), pytest.raises(HttpError) as failed:
        _fetcher(host).get(f"http://{host}/page")
    assert failed.value.status == 429 and asked == [3]  # backed off and retried, as without the header


def test_a_page_sent_a_byte_at_a_time_is_given_up_at_the_total_deadline_and_not_asked_again() -> None:
    """Each byte comes well within the read timeout, so only a deadline on the whole body ends it."""
    with raw_server(b"HTTP/1.1 200 OK\r\nContent-Length: 1000", b"x" * 1000, drip_s=0.2) as (host, asked):
        fetcher = _fetcher(host)
        fetcher.read_timeout_s, fetcher.total_timeout_s = 5.0, 2.0
        with pytest.raises(FetchError, match="not whole after 2s") as caught:
            fetcher.get(f"http://{host}/page")
        assert not caught.value.retryable and asked[0] == 1
        assert 0 < int(caught.value.reason.split("(")[1].split()[0].replace(",", "")) < 1000


def test_headers_sent_a_byte_at_a_time_are_given_up_at_the_total_deadline_and_not_asked_again() -> None:
    """The status line and headers drip as the body did above: the deadline covers them too."""
    head = b"HTTP/1.1 200 OK\r\nX-Slow: " + b"x" * 200 + b"\r\nContent-Length: 2"
    with raw_server(head, b"ok", drip_s=0.2, drip_head=True) as (host, asked):
        fetcher = _fetcher(host)
        fetcher.read_timeout_s, fetcher.total_timeout_s = 5.0, 2.0
        # The whole drip takes 45 s and each byte comes well within the read timeout.
        with pytest.raises(FetchError, match="no whole headers after 2s") as caught:
            fetcher.get(f"http://{host}/page")
        assert not caught.value.retryable and asked[0] == 1
