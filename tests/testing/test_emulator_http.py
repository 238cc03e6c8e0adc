"""The emulator over real HTTP: every route, both API generations, auth, JIT, error bodies."""

from __future__ import annotations

import re
from collections.abc import Iterator

import httpx
import pytest

from lmstrix.testing import (
    EMBEDDING_KEY,
    EmulatedModel,
    LMStudioEmulator,
    count_chat_tokens,
    filler_text,
)
from lmstrix.testing.pytest_plugin import EmulatorFactory

QWEN = "qwen/qwen3-4b"
GEMMA = "google/gemma-3-4b"
LLAMA = "llama-3.2-1b-instruct"
TOKEN = "sk-lm-J9Fa6fbC:jkFcl7oqhmx5GB1eM5fL"
AUTH_MISSING = (
    "An LM Studio API token is required to make requests to this server, but none was provided "
    "using the Authorization header using the 'Bearer' scheme (i.e., 'Authorization: Bearer "
    "$LM_API_TOKEN'). Learn more at: https://lmstudio.ai/docs/developer/core/authentication."
)
NO_MODELS = (
    "No models loaded. Please load a model in the developer page or use the 'lms load' command."
)


@pytest.fixture
def emu(lmstudio_emulator: LMStudioEmulator) -> LMStudioEmulator:
    return lmstudio_emulator


@pytest.fixture
def http(emu: LMStudioEmulator) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=emu.url, timeout=5) as client:
        yield client


def chat(text: str, model: str | None = QWEN, **extra: object) -> dict[str, object]:
    body: dict[str, object] = {"messages": [{"role": "user", "content": text}], **extra}
    if model is not None:
        body["model"] = model
    return body


# --- discovery, unknown routes, transport ---------------------------------------------------


def test_greeting_and_express_headers(http: httpx.Client) -> None:
    response = http.get("/lmstudio-greeting")
    assert response.status_code == 200
    assert response.json() == {"lmstudio": True}
    assert response.headers["x-powered-by"] == "Express"
    assert response.headers["content-type"] == "application/json; charset=utf-8"


@pytest.mark.parametrize(
    ("method", "path"),
    [("POST", "/chat/completions"), ("GET", "/v2/models"), ("DELETE", "/v1/models")],
)
def test_unknown_route_is_200_with_lm_studio_error(
    http: httpx.Client, method: str, path: str
) -> None:
    response = http.request(method, path)
    assert response.status_code == 200
    assert response.json() == {"error": f"Unexpected endpoint or method. ({method} {path})"}


def test_trailing_slash_and_query_string_are_ignored(http: httpx.Client) -> None:
    assert "data" in http.get("/v1/models/?x=1").json()


def test_malformed_json_is_400(http: httpx.Client) -> None:
    response = http.post(
        "/v1/chat/completions", content=b"{nope", headers={"content-type": "application/json"}
    )
    assert response.status_code == 400
    assert response.json()["error"]["code"] == "invalid_json"
    v1 = http.post("/api/v1/models/load", content=b"[1]")
    assert v1.status_code == 400
    assert v1.json()["error"]["type"] == "invalid_request"
    deep = b'{"model": ' + b"[" * 20_000 + b"]" * 20_000 + b"}"
    response = http.post("/v1/chat/completions", content=deep)
    assert response.status_code == 400 and "nested more than 64" in response.text


def test_keep_alive_serves_many_requests(emu: LMStudioEmulator, http: httpx.Client) -> None:
    for _ in range(300):
        assert http.get("/lmstudio-greeting").status_code == 200
    assert emu.counters.requests_by_endpoint["GET /lmstudio-greeting"] == 300


def test_stopped_emulator_refuses_connections(make_emulator: EmulatorFactory) -> None:
    emulator = make_emulator()
    with httpx.Client(base_url=emulator.url, timeout=2) as client:
        assert client.get("/lmstudio-greeting").status_code == 200
        emulator.stop()
        with pytest.raises(httpx.TransportError):
            client.get("/lmstudio-greeting")


# --- model lists -----------------------------------------------------------------------------


def test_openai_models_follow_jit(emu: LMStudioEmulator, http: httpx.Client) -> None:
    ids = [m["id"] for m in http.get("/v1/models").json()["data"]]
    assert ids == [QWEN, GEMMA, LLAMA, EMBEDDING_KEY]
    assert http.get("/v1/models").json()["data"][0] == {
        "id": QWEN,
        "object": "model",
        "owned_by": "organization_owner",
    }
    emu.configure(jit=False)
    assert http.get("/v1/models").json() == {"data": [], "object": "list"}
    emu.load(LLAMA, 2048)
    assert [m["id"] for m in http.get("/v1/models").json()["data"]] == [LLAMA]
    assert http.get(f"/v1/models/{LLAMA}").json()["id"] == LLAMA
    missing = http.get("/v1/models/ghost")
    assert missing.status_code == 404
    assert missing.json()["error"]["code"] == "model_not_found"


def test_v0_models_report_state_and_loaded_context(
    emu: LMStudioEmulator, http: httpx.Client
) -> None:
    data = {m["id"]: m for m in http.get("/api/v0/models").json()["data"]}
    assert [data[k]["type"] for k in (QWEN, GEMMA, EMBEDDING_KEY)] == ["llm", "vlm", "embeddings"]
    assert data[QWEN]["state"] == "not-loaded"
    assert "loaded_context_length" not in data[QWEN]
    assert data[QWEN]["capabilities"] == ["tool_use"]
    assert data[GEMMA]["capabilities"] == ["vision"]
    assert data[QWEN]["max_context_length"] == 32768
    emu.load(QWEN, 8192)
    entry = http.get(f"/api/v0/models/{QWEN}").json()
    assert (entry["state"], entry["loaded_context_length"]) == ("loaded", 8192)
    assert entry["arch"] == "qwen3" and entry["compatibility_type"] == "gguf"
    assert http.get("/api/v0/models/ghost").status_code == 404


def test_v1_models_shape(emu: LMStudioEmulator, http: httpx.Client) -> None:
    emu.load(GEMMA, 16384)
    emu.load(EMBEDDING_KEY)
    models = {m["key"]: m for m in http.get("/api/v1/models").json()["models"]}
    gemma = models[GEMMA]
    assert gemma["type"] == "llm"
    assert gemma["capabilities"] == {"vision": True, "trained_for_tool_use": False}
    assert gemma["quantization"] == {"name": "Q4_K_M", "bits_per_weight": 4}
    assert gemma["loaded_instances"][0]["id"] == GEMMA
    assert gemma["loaded_instances"][0]["config"]["context_length"] == 16384
    assert gemma["selected_variant"] == f"{GEMMA}@q4_k_m"
    assert models[QWEN]["capabilities"]["reasoning"]["default"] == "on"
    embed = models[EMBEDDING_KEY]
    assert embed["type"] == "embedding"
    assert "architecture" not in embed and "capabilities" not in embed
    assert embed["loaded_instances"] == [{"id": EMBEDDING_KEY, "config": {"context_length": 2048}}]


# --- load / unload ---------------------------------------------------------------------------


def test_load_creates_instances_and_echoes_config(
    emu: LMStudioEmulator, http: httpx.Client
) -> None:
    first = http.post("/api/v1/models/load", json={"model": QWEN, "context_length": 8192})
    assert first.status_code == 200
    body = first.json()
    assert body == {
        "type": "llm",
        "instance_id": QWEN,
        "load_time_seconds": body["load_time_seconds"],
        "status": "loaded",
    }
    assert body["load_time_seconds"] == pytest.approx(2.0 + 0.05 * 8.192, abs=1e-3)
    second = http.post(
        "/api/v1/models/load",
        json={
            "model": QWEN,
            "context_length": 4096,
            "echo_load_config": True,
            "flash_attention": False,
        },
    ).json()
    assert second["instance_id"] == f"{QWEN}:2"
    assert second["load_config"]["context_length"] == 4096
    assert second["load_config"]["flash_attention"] is False
    embed = http.post(
        "/api/v1/models/load", json={"model": EMBEDDING_KEY, "echo_load_config": True}
    ).json()
    assert embed["type"] == "embedding"
    assert embed["load_config"] == {"context_length": 2048}
    assert emu.loaded_instances() == {QWEN: 8192, f"{QWEN}:2": 4096, EMBEDDING_KEY: 2048}


def test_load_errors(http: httpx.Client) -> None:
    unknown = http.post("/api/v1/models/load", json={"model": "totally/made-up-9000"})
    assert unknown.status_code == 404
    assert unknown.json() == {
        "error": {
            "type": "model_not_found",
            "message": "Model totally/made-up-9000 not found in downloaded models",
        }
    }
    missing = http.post("/api/v1/models/load", json={})
    assert missing.status_code == 400
    assert missing.json()["error"] == {
        "type": "invalid_request",
        "message": '"model" is required',
        "code": "missing_required_parameter",
        "param": "model",
    }


def test_oom_load_fails_and_auto_fit_reduces(emu: LMStudioEmulator, http: httpx.Client) -> None:
    failed = http.post("/api/v1/models/load", json={"model": QWEN, "context_length": 32768})
    assert failed.status_code == 400
    error = failed.json()["error"]
    assert error["type"] == "model_load_failed"
    assert re.fullmatch(
        r'Failed to load model "qwen/qwen3-4b"\. Error: Model loading was stopped due to '
        r"insufficient system resources\. Under the current settings, this model requires "
        r"approximately \d+\.\d\d GB of memory, .* guardrails in settings\.",
        error["message"],
    )
    assert emu.loaded_instances() == {}
    emu.configure(auto_fit=True)
    fitted = http.post(
        "/api/v1/models/load",
        json={"model": QWEN, "context_length": 32768, "echo_load_config": True},
    ).json()
    assert fitted["load_config"]["context_length"] == 24576
    counters = emu.counters
    assert counters.load_failures == 1
    assert [(r.requested_context, r.applied_context) for r in counters.loads] == [(32768, 24576)]


def test_context_override_and_clamp(emu: LMStudioEmulator, http: httpx.Client) -> None:
    emu.configure(context_override=3000)
    body = {"model": LLAMA, "context_length": 8192, "echo_load_config": True}
    assert (
        http.post("/api/v1/models/load", json=body).json()["load_config"]["context_length"] == 3000
    )
    emu.configure(context_override=None, max_applied_context=6000)
    assert (
        http.post("/api/v1/models/load", json=body).json()["load_config"]["context_length"] == 6000
    )
    listed = http.get("/api/v1/models").json()["models"][2]["loaded_instances"]
    assert [i["config"]["context_length"] for i in listed] == [3000, 6000]


def test_injected_load_failure(emu: LMStudioEmulator, http: httpx.Client) -> None:
    emu.fail_next_load("Error loading model.", model=LLAMA)
    failed = http.post("/api/v1/models/load", json={"model": LLAMA})
    assert failed.json()["error"]["message"] == (
        'Failed to load model "llama-3.2-1b-instruct". Error: Error loading model.'
    )
    assert http.post("/api/v1/models/load", json={"model": LLAMA}).status_code == 200


def test_unload(emu: LMStudioEmulator, http: httpx.Client) -> None:
    emu.load(QWEN, 4096)
    emu.load(QWEN, 4096)
    response = http.post("/api/v1/models/unload", json={"instance_id": f"{QWEN}:2"})
    assert (response.status_code, response.json()) == (200, {"instance_id": f"{QWEN}:2"})
    assert emu.loaded_instances() == {QWEN: 4096}
    again = http.post("/api/v1/models/unload", json={"instance_id": f"{QWEN}:2"})
    assert again.status_code == 404
    assert again.json()["error"]["type"] == "model_not_found"
    assert [u.reason for u in emu.counters.unloads] == ["api"]


def test_pre_04_server_has_no_v1_api(emu: LMStudioEmulator, http: httpx.Client) -> None:
    emu.configure(api_generation="0.3")
    for method, path in [
        ("GET", "/api/v1/models"),
        ("POST", "/api/v1/models/load"),
        ("POST", "/api/v1/models/unload"),
        ("POST", "/api/v1/chat"),
    ]:
        response = http.request(method, path, json={"model": QWEN})
        assert response.status_code == 200
        assert response.json() == {"error": f"Unexpected endpoint or method. ({method} {path})"}
    assert http.get("/api/v0/models").status_code == 200
    assert emu.counters.load_count == 0
    emu.configure(api_generation="0.4")
    assert "models" in http.get("/api/v1/models").json()


# --- auth ------------------------------------------------------------------------------------


def test_auth(make_emulator: EmulatorFactory) -> None:
    emulator = make_emulator(require_auth=True, api_tokens={TOKEN})
    with httpx.Client(base_url=emulator.url) as client:
        assert client.get("/lmstudio-greeting").json() == {"lmstudio": True}
        missing = client.get("/api/v1/models")
        assert missing.status_code == 401
        assert missing.json() == {
            "error": {"type": "invalid_request", "code": "invalid_api_key", "message": AUTH_MISSING}
        }
        basic = client.get("/v1/models", headers={"Authorization": f"Basic {TOKEN}"})
        assert basic.json()["error"]["message"] == AUTH_MISSING
        wrong = client.get("/v1/models", headers={"Authorization": "Bearer sk-lm-aaaaaaaa:b"})
        assert wrong.status_code == 401
        assert wrong.json()["error"]["code"] == "invalid_api_key"
        assert wrong.json()["error"]["message"] != AUTH_MISSING
        good = client.get("/api/v1/models", headers={"Authorization": f"Bearer {TOKEN}"})
        assert good.status_code == 200 and "models" in good.json()
        emulator.configure(require_auth=False)
        assert client.get("/api/v1/models").status_code == 200


# --- inference -------------------------------------------------------------------------------


def test_openai_chat_completion_shape(emu: LMStudioEmulator, http: httpx.Client) -> None:
    request = chat("2+3=")
    response = http.post("/v1/chat/completions", json=request)
    assert response.status_code == 200
    body = response.json()
    assert re.fullmatch(r"chatcmpl-[0-9a-z]{21}", body["id"])
    assert body["object"] == "chat.completion"
    assert body["model"] == QWEN
    assert body["choices"] == [
        {
            "index": 0,
            "logprobs": None,
            "finish_reason": "stop",
            "message": {"role": "assistant", "content": "5"},
        }
    ]
    prompt_tokens = count_chat_tokens(request["messages"])  # type: ignore[arg-type]
    assert body["usage"] == {
        "prompt_tokens": prompt_tokens,
        "completion_tokens": 1,
        "total_tokens": prompt_tokens + 1,
    }
    assert body["stats"] == {}
    assert "model_info" not in body
    assert emu.counters.loads[0].jit is True
    assert emu.loaded_instances() == {QWEN: 4096}


def test_v0_chat_has_stats_model_info_runtime(emu: LMStudioEmulator, http: httpx.Client) -> None:
    emu.load(QWEN, 8192)
    body = http.post("/api/v0/chat/completions", json=chat("count to 10")).json()
    assert body["choices"][0]["message"]["content"] == "1 2 3 4 5 6 7 8 9 10"
    stats = body["stats"]
    assert stats["stop_reason"] == "eosFound"
    assert stats["tokens_per_second"] == pytest.approx(50.0)
    assert stats["generation_time"] == pytest.approx(10 / 50, abs=1e-3)
    assert stats["time_to_first_token"] == pytest.approx(
        body["usage"]["prompt_tokens"] / 2000, abs=1e-3
    )
    assert body["model_info"] == {
        "arch": "qwen3",
        "quant": "Q4_K_M",
        "format": "gguf",
        "context_length": 8192,
    }
    assert body["runtime"]["supported_formats"] == ["gguf"]


@pytest.mark.parametrize("prefix", ["/v1", "/api/v0"])
def test_text_completions(http: httpx.Client, prefix: str) -> None:
    body = http.post(f"{prefix}/completions", json={"model": QWEN, "prompt": "6*7="}).json()
    assert re.fullmatch(r"cmpl-[0-9a-z]{21}", body["id"])
    assert body["object"] == "text_completion"
    assert body["choices"][0]["text"] == "42"


def test_max_tokens_and_context_edge_stop_reasons(
    emu: LMStudioEmulator, http: httpx.Client
) -> None:
    capped = http.post("/api/v0/chat/completions", json=chat("count to 50", max_tokens=5)).json()
    assert capped["choices"][0]["finish_reason"] == "length"
    assert capped["usage"]["completion_tokens"] == 5
    assert capped["stats"]["stop_reason"] == "maxPredictedTokensReached"
    emu.load(LLAMA, 40)
    request = chat("count to 100", model=LLAMA, max_tokens=-1)
    edge = http.post("/api/v0/chat/completions", json=request).json()
    assert edge["choices"][0]["finish_reason"] == "length"
    assert edge["usage"]["total_tokens"] == 40
    assert edge["stats"]["stop_reason"] == "contextLengthReached"


def test_context_overflow_wordings(emu: LMStudioEmulator, http: httpx.Client) -> None:
    emu.load(LLAMA, 100)
    request = {"model": LLAMA, "messages": [{"role": "user", "content": filler_text(200)}]}
    prompt = count_chat_tokens(request["messages"])  # type: ignore[arg-type]
    response = http.post("/v1/chat/completions", json=request)
    assert response.status_code == 400
    assert response.json() == {
        "error": "The number of tokens to keep from the initial prompt is greater than the "
        f"context length (n_keep: {prompt}>= n_ctx: 100). Try to load the model with a larger "
        "context length, or provide a shorter input."
    }
    emu.configure(overflow_wording=2)
    assert (
        http.post("/api/v0/chat/completions", json=request)
        .json()["error"]
        .startswith(
            f"Trying to keep the first {prompt} tokens when context the overflows. However, the "
            "model is loaded with context length of only 100 tokens"
        )
    )
    emu.configure(overflow_wording=3)
    text = (
        f"Input does not fit in context length. The input has {prompt} tokens, but the context "
        "length only supports 100 tokens."
    )
    assert http.post("/v1/chat/completions", json=request).json() == {
        "error": {"message": text},
        "message": text,
    }
    emu.configure(overflow_wording=4)
    assert http.post("/v1/chat/completions", json=request).json() == {
        "error": "Context size has been exceeded."
    }


def test_unknown_model(emu: LMStudioEmulator, http: httpx.Client) -> None:
    response = http.post("/v1/chat/completions", json=chat("hi", model="o4-mini"))
    assert response.status_code == 400
    assert response.json() == {
        "error": {
            "message": 'Invalid model identifier "o4-mini". Please specify a valid downloaded '
            f"model (e.g., {QWEN}, {GEMMA}, {LLAMA}, {EMBEDDING_KEY}).",
            "type": "invalid_request_error",
            "param": "model",
            "code": "model_not_found",
        }
    }
    emu.configure(legacy_not_found=True)
    legacy = http.post("/api/v0/chat/completions", json=chat("hi", model="local model"))
    assert legacy.status_code == 404
    assert legacy.json()["error"]["message"].startswith(
        'Model "local model" not found. Please specify a valid model.\n\nYour models:\n\n'
    )
    assert emu.counters.load_count == 0


def test_jit_off(emu: LMStudioEmulator, http: httpx.Client) -> None:
    emu.configure(jit=False)
    for model in (QWEN, "ghost", None):
        response = http.post("/v1/chat/completions", json=chat("hi", model=model))
        assert (response.status_code, response.json()) == (400, {"error": NO_MODELS})
    emu.load(LLAMA, 4096)
    other = http.post("/v1/chat/completions", json=chat("hi", model=QWEN))
    assert other.status_code == 400
    assert other.json()["error"]["message"].startswith('Invalid model identifier "qwen/qwen3-4b"')
    served = http.post("/v1/chat/completions", json=chat("2+2=", model=None)).json()
    assert (served["model"], served["choices"][0]["message"]["content"]) == (LLAMA, "4")
    assert emu.counters.load_count == 1


def test_model_omitted_with_several_loaded(emu: LMStudioEmulator, http: httpx.Client) -> None:
    emu.load(QWEN, 4096)
    emu.load(LLAMA, 4096)
    response = http.post("/v1/chat/completions", json=chat("hi", model=None))
    assert response.status_code == 404
    error = response.json()["error"]
    assert error["message"].startswith("Multiple models are loaded. Please specify a model")
    assert error["code"] == "model_not_found"


def test_instance_id_as_model(emu: LMStudioEmulator, http: httpx.Client) -> None:
    emu.load(QWEN, 4096)
    emu.load(QWEN, 12000)
    body = http.post("/api/v0/chat/completions", json=chat("1+1=", model=f"{QWEN}:2")).json()
    assert body["model"] == f"{QWEN}:2"
    assert body["model_info"]["context_length"] == 12000
    variant = http.post("/api/v0/chat/completions", json=chat("1+1=", model=f"{QWEN}@q4_k_m"))
    assert variant.json()["model"] == QWEN


def test_jit_load_failure(make_emulator: EmulatorFactory) -> None:
    tight = EmulatedModel(key="big/model", loadable_limit=2048, max_context_length=8192)
    emulator = make_emulator([tight])
    with httpx.Client(base_url=emulator.url) as client:
        response = client.post("/v1/chat/completions", json=chat("hi", model="big/model"))
    assert response.status_code == 400
    error = response.json()["error"]
    assert error["type"] == "invalid_request_error"
    assert error["message"].startswith(
        'Failed to load model "big/model". Error: Model loading was stopped due to insufficient '
        "system resources. Under the current settings, this model requires approximately "
    )
    assert emulator.loaded_instances() == {}


def test_wrong_model_type(http: httpx.Client) -> None:
    chat_on_embedding = http.post("/v1/chat/completions", json=chat("hi", model=EMBEDDING_KEY))
    assert chat_on_embedding.status_code == 400
    embed_on_llm = http.post("/v1/embeddings", json={"model": QWEN, "input": "hi"})
    assert embed_on_llm.status_code == 400
    assert embed_on_llm.json()["error"]["param"] == "model"


def test_missing_messages(http: httpx.Client) -> None:
    response = http.post("/v1/chat/completions", json={"model": QWEN})
    assert response.status_code == 400
    assert response.json()["error"]["param"] == "messages"


@pytest.mark.parametrize("prefix", ["/v1", "/api/v0"])
def test_embeddings(emu: LMStudioEmulator, http: httpx.Client, prefix: str) -> None:
    request = {"model": EMBEDDING_KEY, "input": ["hello world", "bye"]}
    body = http.post(f"{prefix}/embeddings", json=request).json()
    assert body["object"] == "list"
    assert body["model"] == f"{EMBEDDING_KEY}@q4_k_m"
    vectors = [d["embedding"] for d in body["data"]]
    assert [d["index"] for d in body["data"]] == [0, 1]
    assert all(len(v) == 16 for v in vectors)
    assert sum(x * x for x in vectors[0]) == pytest.approx(1.0)
    assert vectors[0] != vectors[1]
    again = http.post(f"{prefix}/embeddings", json={"model": EMBEDDING_KEY, "input": "hello world"})
    assert again.json()["data"][0]["embedding"] == vectors[0]
    assert body["usage"] == {"prompt_tokens": 3, "total_tokens": 3}


def test_needle_recall_over_http(make_emulator: EmulatorFactory) -> None:
    model = EmulatedModel(key="needle", max_context_length=8192, usable_limit=300)
    emulator = make_emulator([model])

    def ask(filler_tokens: int) -> str:
        content = f"The vault code is 4417. {filler_text(filler_tokens)} What is the vault code?"
        with httpx.Client(base_url=emulator.url) as client:
            body = client.post("/v1/chat/completions", json=chat(content, model="needle")).json()
        return str(body["choices"][0]["message"]["content"])

    assert ask(100) == "The vault code is 4417."
    assert "4417" not in ask(400)
