"""LMStudioClient against the LM Studio emulator over real HTTP."""

from __future__ import annotations

import socket
import threading
from typing import Any

import httpx
import pytest

from lmstrix.api.client import LMStudioClient
from lmstrix.api.exceptions import (
    ContextLimitExceededError,
    InferenceError,
    LMStudioAuthError,
    LMStudioConnectionError,
    LMStudioServerError,
    LMStudioTimeoutError,
    ModelLoadError,
    ModelNotFoundError,
    UnsupportedEndpointError,
    ValidationError,
)
from lmstrix.domain.host_types import ApiGeneration
from lmstrix.testing.backend import EmulatedModel
from lmstrix.testing.emulator import LMStudioEmulator
from lmstrix.testing.pytest_plugin import EmulatorFactory
from lmstrix.testing.tokenizer import filler_text

TOKEN = "sk-lm-J9Fa6fbC:jkFcl7oqhmx5GB1eM5fL"
SMALL = EmulatedModel(
    key="acme/small-7b",
    display_name="Small 7B",
    max_context_length=32768,
    loadable_limit=16384,
    usable_limit=8192,
    tool_use=True,
)
OTHER = EmulatedModel(key="acme/other-3b", max_context_length=8192, vision=True, type="vlm")


@pytest.fixture
def emu(make_emulator: EmulatorFactory) -> LMStudioEmulator:
    return make_emulator([SMALL, OTHER])


def client_for(emu: LMStudioEmulator, **kw: Any) -> LMStudioClient:
    kw.setdefault("max_retries", 0)
    return LMStudioClient(emu.url, **kw)


# -- discovery ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("api", "generation"), [("0.4", ApiGeneration.V1), ("0.3", ApiGeneration.V0)]
)
def test_generation_detection_and_model_list(
    make_emulator: EmulatorFactory, api: str, generation: ApiGeneration
) -> None:
    emu = make_emulator([SMALL, OTHER], api_generation=api)
    emu.load("acme/small-7b", 4096)
    with client_for(emu) as c:
        assert c.greeting() is True
        assert c.api_generation is generation
        models = {m.key: m for m in c.list_models()}
    small = models["acme/small-7b"]
    assert small.max_context_length == 32768
    assert small.capabilities.tool_use and not small.capabilities.vision
    assert [(i.id, i.context_length) for i in small.loaded_instances] == [("acme/small-7b", 4096)]
    assert models["acme/other-3b"].capabilities.vision
    assert not models["acme/other-3b"].is_loaded


def test_v1_model_list_carries_metadata(emu: LMStudioEmulator) -> None:
    with client_for(emu) as c:
        m = c.get_model("acme/small-7b")
        with pytest.raises(ModelNotFoundError) as exc:
            c.get_model("acme/smal-7b")
    assert m.display_name == "Small 7B"
    assert m.quantization == "Q4_K_M" and m.format == "gguf" and m.size_bytes
    assert "acme/small-7b" in exc.value.suggestions


def test_health_reports_generation_models_and_latency(emu: LMStudioEmulator) -> None:
    emu.load("acme/other-3b", 2048)
    with client_for(emu) as c:
        h = c.health()
    assert h.reachable and h.is_lmstudio and h.api_generation is ApiGeneration.V1
    assert h.models == 2 and h.loaded_instances == 1
    assert h.latency_ms is not None and h.latency_ms >= 0


def test_health_of_a_down_host_does_not_raise() -> None:
    with LMStudioClient("http://127.0.0.1:9", max_retries=0, connect_timeout=1) as c:
        h = c.health()
    assert not h.reachable and "127.0.0.1:9" in (h.error or "")


# -- loading -----------------------------------------------------------------------------------


def test_load_reports_applied_context_and_reuses_only_the_same_size(emu: LMStudioEmulator) -> None:
    with client_for(emu) as c:
        first = c.load("acme/small-7b", 4096)
        again = c.load("acme/small-7b", 4096)
        bigger = c.load("acme/small-7b", 8192)
        instances = c.loaded_instances("acme/small-7b")
    assert (first.context_length, first.reused, first.reduced) == (4096, False, False)
    assert again.reused and again.instance_id == first.instance_id
    assert not bigger.reused and bigger.context_length == 8192
    # the 4096 instance was unloaded first: never run at a size nobody asked for
    assert [i.context_length for i in instances] == [8192]
    assert emu.counters.loads_by_model()["acme/small-7b"] == [4096, 8192]


def test_auto_fit_reduction_is_never_reported_as_the_requested_size(
    make_emulator: EmulatorFactory,
) -> None:
    emu = make_emulator([SMALL], auto_fit=True)
    with client_for(emu) as c:
        r = c.load("acme/small-7b", 30000)
    assert r.requested_context == 30000
    assert r.context_length == 16384  # what LM Studio really applied
    assert r.reduced


def test_clamping_server_is_detected_even_without_echo(make_emulator: EmulatorFactory) -> None:
    emu = make_emulator([SMALL], max_applied_context=6000)
    with client_for(emu) as c:
        r = c.load("acme/small-7b", 8192)
    assert r.context_length == 6000 and r.reduced


def test_load_failure_insufficient_resources(emu: LMStudioEmulator) -> None:
    with client_for(emu) as c, pytest.raises(ModelLoadError) as exc:
        c.load("acme/small-7b", 30000)
    assert exc.value.insufficient_resources
    assert exc.value.model_id == "acme/small-7b"
    assert exc.value.context_length == 30000


def test_load_unknown_model_suggests(emu: LMStudioEmulator) -> None:
    with client_for(emu) as c, pytest.raises(ModelNotFoundError) as exc:
        c.load("acme/small-8b", 2048)
    assert exc.value.suggestions[0] == "acme/small-7b"
    assert exc.value.host_url == emu.url


def test_load_with_bad_size_is_a_validation_error(emu: LMStudioEmulator) -> None:
    with client_for(emu) as c, pytest.raises(ValidationError, match="context_length"):
        c.load("acme/small-7b", 0)


def test_unload_and_unload_all(emu: LMStudioEmulator) -> None:
    emu.load("acme/small-7b", 2048)
    emu.load("acme/other-3b", 2048)
    with client_for(emu) as c:
        assert c.unload("nope") is False
        assert sorted(c.unload_all()) == ["acme/other-3b", "acme/small-7b"]
        assert c.loaded_instances() == []


def test_load_unload_others_keeps_one_model(emu: LMStudioEmulator) -> None:
    emu.load("acme/other-3b", 2048)
    with client_for(emu) as c:
        c.load("acme/small-7b", 2048, unload_others=True)
        assert [i.id for i in c.loaded_instances()] == ["acme/small-7b"]


def test_old_lm_studio_cannot_load_over_http(make_emulator: EmulatorFactory) -> None:
    emu = make_emulator([SMALL], api_generation="0.3")
    with client_for(emu) as c, pytest.raises(UnsupportedEndpointError, match=r"0\.4\.0"):
        c.load("acme/small-7b", 2048)


# -- inference ---------------------------------------------------------------------------------


@pytest.mark.parametrize("api", ["0.4", "0.3"])
def test_chat_with_lm_studio_stats(make_emulator: EmulatorFactory, api: str) -> None:
    emu = make_emulator([SMALL], api_generation=api)
    with client_for(emu) as c:
        r = c.chat_completion("acme/small-7b", "What is 2+3?", max_tokens=50, temperature=0.1)
    assert "5" in r.content
    assert r.endpoint == "/api/v0/chat/completions" and r.timing_source == "server"
    assert r.prompt_tokens and r.completion_tokens
    assert r.total_tokens == r.prompt_tokens + r.completion_tokens
    assert r.tokens_per_second and r.time_to_first_token is not None
    assert r.stop_reason == "eosFound" and r.finish_reason == "stop"
    assert r.loaded_context_length == 4096  # JIT loaded at the default context


def test_max_tokens_truncates(emu: LMStudioEmulator) -> None:
    with client_for(emu) as c:
        r = c.chat_completion("acme/small-7b", "Tell me a long story about ships.", max_tokens=3)
    assert r.completion_tokens == 3
    assert r.finish_reason == "length" and r.stop_reason == "maxPredictedTokensReached"


def test_needle_recall_within_and_beyond_the_usable_limit(emu: LMStudioEmulator) -> None:
    fact = "The secret code is 4711."
    question = "What is the secret code?"
    with client_for(emu) as c:
        c.load("acme/small-7b", 16384)
        near = c.chat_completion("acme/small-7b", f"{fact} {filler_text(500)} {question}")
        far = c.chat_completion("acme/small-7b", f"{fact} {filler_text(12000)} {question}")
    assert "4711" in near.content
    assert "4711" not in far.content  # loaded at 16k, but only uses 8k


def test_streaming_with_usage_and_early_stop(emu: LMStudioEmulator) -> None:
    pieces: list[str] = []
    with client_for(emu) as c:
        r = c.chat_completion(
            "acme/small-7b",
            "Describe the sea in detail.",
            max_tokens=40,
            stream=True,
            on_token=pieces.append,
        )
        stopped = c.chat_completion(
            "acme/small-7b",
            "Describe the sea in detail.",
            max_tokens=40,
            stream=True,
            should_stop=lambda: True,
        )
    assert "".join(pieces) == r.content and len(pieces) > 1
    assert r.completion_tokens and 1 < r.completion_tokens <= 40 and r.prompt_tokens
    assert stopped.stop_reason == "userStopped"
    assert len(stopped.content) < len(r.content)


def test_streamed_answers_leave_the_connection_reusable(emu: LMStudioEmulator) -> None:
    """The end of a stream after ``[DONE]`` is read, so the next request (the worker's look at
    the loaded models, the next job) goes over the same connection instead of a new one."""
    with client_for(emu) as c:
        c.load("acme/small-7b", 4096)
        opened = emu.connections_opened
        for i in range(4):
            r = c.chat_completion("acme/small-7b", f"say {i}", max_tokens=8, stream=True)
            assert r.content
            assert c.loaded_instances("acme/small-7b")
        assert emu.connections_opened == opened


def test_a_stream_held_open_after_done_is_not_waited_for() -> None:
    """A server that sends ``[DONE]`` but never ends the body does not hold the answer until
    the request's timeout: the answer is whole already."""
    listener = socket.create_server(("127.0.0.1", 0))
    port = listener.getsockname()[1]
    release = threading.Event()

    def serve() -> None:
        conn, _ = listener.accept()
        with conn:
            conn.recv(65536)
            frames = [
                'data: {"choices":[{"delta":{"content":"hello"}}]}\n\n',
                'data: {"choices":[{"delta":{},"finish_reason":"stop"}]}\n\n',
                "data: [DONE]\n\n",
            ]
            head = (
                "HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\n"
                "Transfer-Encoding: chunked\r\n\r\n"
            )
            body = "".join(f"{len(f):x}\r\n{f}\r\n" for f in frames)
            conn.sendall((head + body).encode())
            release.wait(60)  # the terminating chunk never comes (until the test ends)

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        with LMStudioClient(f"http://127.0.0.1:{port}", max_retries=0, timeout=120) as c:
            c._generation = ApiGeneration.OPENAI
            r = c.chat_completion("m", "hi", max_tokens=8, stream=True)
            held_open = thread.is_alive()  # the server still holds the stream
    finally:
        release.set()
        listener.close()
    assert r.content == "hello" and r.finish_reason == "stop"
    assert held_open


class _OneRequestPerConnection:
    """A server that answers the first request on each connection and closes the connection
    when a second one arrives on it, without answering and without having said so (as a host
    whose keep-alive ran out at that moment does)."""

    BODY = b'{"object":"list","data":[{"id":"m","object":"model"}]}'

    def __init__(self) -> None:
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self.listener.getsockname()[1]}"
        self.connections = 0
        self.requests: list[str] = []
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self.listener.accept()
            except OSError:
                return
            self.connections += 1
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _serve(self, conn: socket.socket) -> None:
        with conn:
            for answered in (True, False):
                data = conn.recv(65536)
                if not data:
                    return
                method, path = data.decode("latin-1").split(" ", 2)[:2]
                self.requests.append(f"{method} {path}")
                if answered:
                    head = (
                        "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
                        f"Content-Length: {len(self.BODY)}\r\n\r\n"
                    )
                    conn.sendall(head.encode() + self.BODY)

    def close(self) -> None:
        self.listener.close()


def test_a_read_on_a_connection_the_host_just_closed_is_sent_again() -> None:
    server = _OneRequestPerConnection()
    try:
        with LMStudioClient(server.url, max_retries=0) as c:
            c._generation = ApiGeneration.OPENAI
            first = c.list_models()
            second = c.list_models()  # goes out on the pooled connection, which the host drops
        assert [m.key for m in first] == [m.key for m in second] == ["m"]
        assert server.requests == ["GET /v1/models"] * 3 and server.connections == 2
    finally:
        server.close()


def test_a_chat_on_a_connection_the_host_just_closed_is_not_sent_twice() -> None:
    server = _OneRequestPerConnection()
    try:
        with LMStudioClient(server.url, max_retries=0) as c:
            c._generation = ApiGeneration.OPENAI
            c.list_models()
            with pytest.raises(LMStudioServerError, match="connection closed before an answer"):
                c.chat_completion("m", "hi", max_tokens=8)
        assert server.requests == ["GET /v1/models", "POST /v1/chat/completions"]
    finally:
        server.close()


@pytest.mark.parametrize("wording", [1, 2, 3, 4])
@pytest.mark.parametrize("stream", [False, True])
def test_every_overflow_wording_over_http(
    make_emulator: EmulatorFactory, wording: int, stream: bool
) -> None:
    emu = make_emulator([SMALL], overflow_wording=wording)
    with client_for(emu) as c:
        c.load("acme/small-7b", 2048)
        with pytest.raises(ContextLimitExceededError) as exc:
            c.chat_completion("acme/small-7b", filler_text(3000), stream=stream)
    if wording in (1, 2, 3):
        assert exc.value.context_limit == 2048
        assert exc.value.prompt_tokens is not None and exc.value.prompt_tokens > 2048


def test_unknown_model_on_inference(emu: LMStudioEmulator) -> None:
    with client_for(emu) as c, pytest.raises(ModelNotFoundError) as exc:
        c.chat_completion("gpt-4o", "hi")
    assert exc.value.model_id == "gpt-4o"
    assert "acme/small-7b" in exc.value.suggestions


def test_legacy_not_found(make_emulator: EmulatorFactory) -> None:
    emu = make_emulator([SMALL], legacy_not_found=True)
    with client_for(emu) as c, pytest.raises(ModelNotFoundError) as exc:
        c.chat_completion("gpt-4o", "hi")
    assert "acme/small-7b" in exc.value.suggestions


def test_jit_off(make_emulator: EmulatorFactory) -> None:
    emu = make_emulator([SMALL, OTHER], jit=False)
    with client_for(emu) as c:
        with pytest.raises(ModelNotFoundError, match="No models loaded"):
            c.chat_completion("acme/small-7b", "hi")
        c.load("acme/small-7b", 2048)
        assert "2" in c.chat_completion("acme/small-7b", "1+1=").content


def test_jit_load_failure_on_inference(make_emulator: EmulatorFactory) -> None:
    emu = make_emulator([SMALL], default_context_length=30000)
    with client_for(emu) as c, pytest.raises(ModelLoadError) as exc:
        c.chat_completion("acme/small-7b", "hi")
    assert exc.value.model_id == "acme/small-7b" and exc.value.insufficient_resources


# -- auth --------------------------------------------------------------------------------------


def test_auth_required_missing_wrong_and_right_token(make_emulator: EmulatorFactory) -> None:
    emu = make_emulator([SMALL], require_auth=True, api_tokens={TOKEN})
    with client_for(emu) as c, pytest.raises(LMStudioAuthError) as missing:
        c.list_models()
    assert not missing.value.token_sent and "LM_API_TOKEN" in str(missing.value)
    with (
        client_for(emu, token="sk-lm-wrong:wrongwrongwrongwrong1") as c,
        pytest.raises(LMStudioAuthError) as wrong,
    ):
        c.list_models()
    assert wrong.value.token_sent
    with client_for(emu, token=TOKEN) as c:
        assert [m.key for m in c.list_models()] == ["acme/small-7b"]
        r = c.chat_completion("acme/small-7b", "2+2=")
        assert "4" in r.content
        # the token never shows in the client's repr or in any error
        assert TOKEN not in repr(c)
        with pytest.raises(ModelNotFoundError) as exc:
            c.chat_completion("nope", "x")
        assert TOKEN not in str(exc.value) and TOKEN not in repr(exc.value.details)


# -- faults ------------------------------------------------------------------------------------


def test_connection_refused_names_the_host_and_the_fix() -> None:
    with (
        LMStudioClient("http://127.0.0.1:9", max_retries=2, retry_backoff=0.01) as c,
        pytest.raises(LMStudioConnectionError) as exc,
    ):
        c.list_models()
    assert exc.value.host_url == "http://127.0.0.1:9"
    assert "lms server start" in str(exc.value) and "refused" in str(exc.value)


def test_dns_failure() -> None:
    with (
        LMStudioClient("http://no-such-host.invalid:1234", max_retries=0) as c,
        pytest.raises(LMStudioConnectionError, match=r"no-such-host\.invalid"),
    ):
        c.list_models()


@pytest.mark.parametrize("url", ["localhost:1234", "ftp://x", "http://", "http://h:99999"])
def test_malformed_urls(url: str) -> None:
    with pytest.raises(ValidationError, match="base_url"):
        LMStudioClient(url)


def test_hanging_server_times_out_within_the_limit(emu: LMStudioEmulator) -> None:
    with client_for(emu, timeout=0.5) as c:
        assert c.api_generation is ApiGeneration.V1
        emu.reset_counters()
        emu.configure(hang_requests=True)
        try:
            with pytest.raises(LMStudioTimeoutError) as exc:
                c.chat_completion("acme/small-7b", "hi")
            # The call came back while the server still held its one request (released only
            # below): the client's own timeout ended it, not an answer or a dropped connection.
            emu.wait_for(lambda: emu.hanging == 1, timeout=30)
            assert emu.counters.requests_by_endpoint == {"POST /api/v0/chat/completions": 1}
        finally:
            emu.configure(hang_requests=False)
            emu.release_hangs()
    emu.wait_for(lambda: emu.hanging == 0, timeout=30)
    assert exc.value.host_url == emu.url
    assert (exc.value.seconds, exc.value.setting) == (0.5, "lmstudio.timeout")
    assert "0.5s (lmstudio.timeout)" in str(exc.value) and "not sent again" in str(exc.value)


def test_truncated_stream_is_an_inference_error(make_emulator: EmulatorFactory) -> None:
    emu = make_emulator([SMALL], truncate_streams=True)
    with client_for(emu) as c, pytest.raises(InferenceError, match="stream ended"):
        c.chat_completion("acme/small-7b", "Describe the sea.", max_tokens=30, stream=True)


def test_non_json_body(emu: LMStudioEmulator) -> None:
    with client_for(emu) as c:
        assert c.api_generation is ApiGeneration.V1
        emu.fail_next(
            200, "<html>Welcome to nginx!</html>", content_type="text/html", path="/api/v1/models"
        )
        with pytest.raises(LMStudioConnectionError, match="not LM Studio") as exc:
            c.list_models()
    assert exc.value.request_sent  # a server answered: trying again would not help


def test_server_that_is_not_lm_studio() -> None:
    """An HTTP server that answers 404 everywhere is neither LM Studio nor OpenAI-compatible."""
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    class NotFound(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(404)
            self.end_headers()

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), NotFound)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}"
        with LMStudioClient(url, max_retries=0) as c, pytest.raises(LMStudioConnectionError) as exc:
            c.list_models()
        assert str(exc.value).startswith(f"{url} answers HTTP but is no LLM server: tried GET")
        assert "/api/v0/models (HTTP 404, not JSON)" in str(exc.value)
    finally:
        server.shutdown()
        server.server_close()


def test_retries_only_on_connection_errors(emu: LMStudioEmulator) -> None:
    emu.fail_next(500, {"error": {"message": "engine crashed"}}, path="/api/v0/chat/completions")
    before = emu.counters.requests_by_endpoint["POST /api/v0/chat/completions"]
    with client_for(emu, max_retries=3) as c, pytest.raises(InferenceError, match="HTTP 500"):
        c.chat_completion("acme/small-7b", "hi")
    # one request only: an HTTP error is an answer, not something a retry can fix
    after = emu.counters.requests_by_endpoint["POST /api/v0/chat/completions"]
    assert after - before <= 1


def test_raw_http_check_of_unknown_route_shape(emu: LMStudioEmulator) -> None:
    r = httpx.get(f"{emu.url}/api/v2/whatever")
    assert r.status_code == 200 and r.json()["error"].startswith("Unexpected endpoint")
