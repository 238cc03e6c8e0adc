"""A host that answers JSON nested thousands deep gets a typed error, not RecursionError."""

from __future__ import annotations

import pytest

from lmstrix.api.client import LMStudioClient
from lmstrix.api.exceptions import InferenceError, LMStudioConnectionError
from lmstrix.testing.pytest_plugin import EmulatorFactory

DEEP = "[" * 20_000 + "]" * 20_000
CHAT = "/api/v0/chat/completions"


@pytest.mark.parametrize("status", [200, 500, 502])
def test_deeply_nested_answer_is_not_lm_studio_json(
    make_emulator: EmulatorFactory, status: int
) -> None:
    emu = make_emulator()
    model = emu.models[0].key
    emu.fail_next(status, DEEP, content_type="application/json", path=CHAT)
    with LMStudioClient(emu.url, max_retries=0) as client:
        with pytest.raises((LMStudioConnectionError, InferenceError)) as err:
            client.chat_completion(model, "hi", max_tokens=4)
        assert "RecursionError" not in repr(err.value)
        # the next, sane answer is read as usual
        assert client.chat_completion(model, "say ok", max_tokens=4).content == "ok"
