"""The one REST client of the Batch API teacher and the API student (ftcot.openai_rest).

A real HTTP server on 127.0.0.1 (http.server in a thread) plays a provider that echoes what it was sent — the
key, the Basic credentials of the URL, the URL's query token — in its error messages, and asks to be retried
later. Both clients must scrub all of it and honour the wait; each raises its own error type.
"""

from __future__ import annotations

import base64
import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from ftcot.openai_rest import RestAPIError
from ftcot.teach.batch import BatchAPIError, BatchClient
from ftcot.train.openai_student import FineTuneAPIError, FineTuneClient

KEY = "sk-ftcot-rest-test-0123456789SECRET"
PASSWORD, TOKEN = "pa55word-secret", "query-token-secret"


class _Echo(BaseHTTPRequestHandler):
    busy = 0  # 503s still to answer before a 200

    def do_GET(self) -> None:  # noqa: N802 (http.server's name)
        if _Echo.busy:
            _Echo.busy -= 1
            self._reply(503, {"error": {"message": "overloaded"}}, {"retry-after-ms": "40"})
        elif self.path.split("?")[0].endswith("/ok"):
            self._reply(200, {"id": "ok", "status": "completed"})
        else:
            said = f"bad credentials {self.headers.get('Authorization')} for http://{self.headers['Host']}{self.path}"
            self._reply(401, {"error": {"message": said, "code": "invalid_api_key"}})

    def _reply(self, status: int, body: dict, headers: dict | None = None) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        for name, value in {"Content-Type": "application/json", **(headers or {})}.items():
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args) -> None:  # quiet
        pass


@pytest.fixture
def echo():
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Echo)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://user:{PASSWORD}@127.0.0.1:{server.server_address[1]}/v1?token={TOKEN}"
    server.shutdown()
    server.server_close()
    _Echo.busy = 0


@pytest.mark.parametrize("client_type, error_type, get, hint", [
    (BatchClient, BatchAPIError, "get_batch", " (check the API key)"),
    (FineTuneClient, FineTuneAPIError, "get_job", ""),
])
def test_an_echoed_key_url_password_and_token_never_reach_the_error(echo, client_type, error_type, get, hint):
    with client_type(echo, KEY, max_retries=0) as client:
        with pytest.raises(error_type) as info:
            getattr(client, get)("x")
    message = str(info.value)
    assert isinstance(info.value, RestAPIError) and info.value.status == 401 and not info.value.retryable
    assert message.startswith("HTTP 401 from GET http://127.0.0.1:") and message.endswith(hint)
    assert "bad credentials" in message and "***" in message
    basic = base64.b64encode(f"user:{PASSWORD}".encode()).decode()
    for secret in (KEY, PASSWORD, TOKEN, basic):
        assert secret not in message and secret not in repr(client)


@pytest.mark.parametrize("client_type, get", [(BatchClient, "get_batch"), (FineTuneClient, "get_job")])
def test_a_503_is_retried_after_the_wait_the_server_asks_for(echo, client_type, get):
    _Echo.busy = 2
    waited: list[float] = []
    with client_type(echo, KEY, sleep=waited.append, backoff_base_s=0.001) as client:
        assert getattr(client, get)("ok") == {"id": "ok", "status": "completed"}
    assert len(waited) == 2 and all(0.04 <= w <= 0.041 for w in waited)  # retry-after-ms, jitter ≤ backoff base


def test_one_retry_policy_for_every_http_client():
    """The teacher backend and the Batch/fine-tuning clients disagreed on 409 (a conflict the server resolves by
    itself: the openai SDK retries it); there is one policy now, and both clients use it."""
    from ftcot import api_replies, openai_rest
    from ftcot.teach.backends import openai_compat

    assert openai_rest.retryable_status is openai_compat.retryable_status is api_replies.retryable_status
    assert [api_replies.retryable_status(s) for s in (400, 401, 404, 408, 409, 422, 429, 500, 503)] == [
        False, False, False, True, True, False, True, True, True]
