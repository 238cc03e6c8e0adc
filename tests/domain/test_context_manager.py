"""ContextManager (lmstrix.core.context): strategies, validation, token calibration, out_ctx."""

from __future__ import annotations

import threading

import pytest

from lmstrix.api.exceptions import ContextLimitExceededError, ValidationError
from lmstrix.core.context import (
    AUTO_OUT_CTX_CAP,
    DEFAULT_CHARS_PER_TOKEN,
    STRATEGIES,
    ContextManager,
    TokenCalibration,
    resolve_out_ctx,
)

# -- calculate_optimal_context ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("strategy", "expected"),
    [
        # need = 10_000 + 2_000 = 12_000
        ("conservative", 15_104),  # + 25 % = 15_000 -> rounded up to 256
        ("balanced", 13_312),  # + 10 % = 13_200 -> 13_312
        ("aggressive", 12_288),  # + 2 % = 12_240 -> 12_288
    ],
)
def test_strategies_keep_their_headroom(strategy: str, expected: int) -> None:
    manager = ContextManager()
    size = manager.calculate_optimal_context(10_000, 2_000, 131072, strategy=strategy)
    assert size == expected
    assert size % 256 == 0
    assert size >= 12_000 * (1 + STRATEGIES[strategy].headroom)


def test_default_strategy_is_balanced_and_small_requests_get_the_minimum_margin() -> None:
    manager = ContextManager()
    assert manager.calculate_optimal_context(10_000, 2_000, 131072) == 13_312
    # need 300: margins 512 / 256 / 64 dominate the percentages
    assert manager.calculate_optimal_context(200, 100, 32768, "conservative") == 1024
    assert manager.calculate_optimal_context(200, 100, 32768, "balanced") == 768
    assert manager.calculate_optimal_context(200, 100, 32768, "aggressive") == 512
    assert manager.calculate_optimal_context(0, 0, 32768, "aggressive") == 256


def test_caps_on_the_model_limit() -> None:
    manager = ContextManager()
    # need 7000: conservative wants 8750 but may use only 75 % of 10_000
    with pytest.raises(ContextLimitExceededError) as err:
        manager.calculate_optimal_context(6_000, 1_000, 10_000, "conservative")
    exc = err.value
    assert (exc.prompt_tokens, exc.requested_output, exc.context_limit) == (6_000, 1_000, 10_000)
    assert "conservative" in str(exc) and "7500" in str(exc)
    # balanced: 7700 fits under 9000; rounding to 7936 is fine
    assert manager.calculate_optimal_context(6_000, 1_000, 10_000, "balanced") == 7_936
    # rounding up would overshoot the cap: the cap itself is returned
    assert manager.calculate_optimal_context(8_000, 1_000, 10_000, "aggressive") == 9_216
    assert manager.calculate_optimal_context(9_700, 100, 10_000, "aggressive") == 10_000
    with pytest.raises(ContextLimitExceededError):
        manager.calculate_optimal_context(9_900, 100, 10_000, "aggressive")


@pytest.mark.parametrize(
    ("args", "field_name"),
    [
        ((-1, 10, 4096, "balanced"), "prompt_length"),
        ((10, -1, 4096, "balanced"), "desired_output"),
        ((10, 10, 0, "balanced"), "model_max_context"),
        ((10, 10, 4096, "reckless"), "strategy"),
        ((10.5, 10, 4096, "balanced"), "prompt_length"),
    ],
)
def test_calculate_rejects_bad_arguments(args: tuple[object, ...], field_name: str) -> None:
    with pytest.raises(ValidationError) as err:
        ContextManager().calculate_optimal_context(*args)  # type: ignore[arg-type]
    assert err.value.field == field_name


# -- validate_context_size and token estimation -------------------------------------------------


def test_validate_context_size_uses_the_estimate() -> None:
    manager = ContextManager()
    prompt = "x" * 3500  # 1000 tokens at the default 3.5 chars per token
    assert manager.estimate_tokens(prompt) == 1000
    assert manager.validate_context_size(prompt, 3096, 4096)
    assert not manager.validate_context_size(prompt, 3097, 4096)
    assert manager.validate_context_size("", 0, 1)
    with pytest.raises(ValidationError):
        manager.validate_context_size(prompt, -1, 4096)
    with pytest.raises(ValidationError):
        manager.validate_context_size(prompt, 1, 0)
    with pytest.raises(ValidationError):
        manager.validate_context_size(None, 1, 10)  # type: ignore[arg-type]


def test_per_model_calibration_from_observed_usage() -> None:
    manager = ContextManager()
    text = "y" * 6000
    assert manager.estimate_tokens(text, "m") == manager.estimate_tokens(text)
    manager.observe("m", chars=600_000, tokens=100_000)  # 6 chars per token
    assert manager.estimate_tokens(text, "m") == pytest.approx(1000, abs=3)
    assert manager.estimate_tokens(text, "other") == manager.estimate_tokens(text)
    assert manager.validate_context_size(text, 3000, 4096, model_id="m")
    assert not manager.validate_context_size(text, 3000, 4096)
    assert set(manager.calibrations()) == {"m"}
    seeded = ContextManager(calibrations=manager.calibrations())
    assert seeded.estimate_tokens(text, "m") == manager.estimate_tokens(text, "m")


def test_token_calibration_weights_evidence_over_the_prior() -> None:
    calibration = TokenCalibration()
    assert calibration.chars_per_token == DEFAULT_CHARS_PER_TOKEN
    assert not calibration.observed
    tiny = calibration.observe(20, 2)  # "10 chars per token" from a 2-token hello
    assert 3.5 < tiny.chars_per_token < 4.0
    big = calibration.observe(500_000, 100_000)
    assert big.chars_per_token == pytest.approx(5.0, rel=0.01)
    assert big.observe(0, 10) is big and big.observe(10, 0) is big
    assert big.estimate("") == 0 and big.estimate("a") == 1
    assert big.chars_for(1000) == pytest.approx(5000, rel=0.01)


def test_manager_is_safe_to_share_between_threads() -> None:
    manager = ContextManager()

    def work() -> None:
        for _ in range(500):
            manager.observe("m", 40, 10)

    threads = [threading.Thread(target=work) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert manager.calibration("m").tokens == 4 * 500 * 10


def test_default_ratio_must_be_positive() -> None:
    with pytest.raises(ValidationError):
        ContextManager(default_chars_per_token=0)


# -- resolve_out_ctx ----------------------------------------------------------------------------


def resolve(out_ctx: object, **kwargs: object) -> int:
    params: dict[str, object] = {"prompt_tokens": 1000, "context_limit": 8192, **kwargs}
    return resolve_out_ctx(out_ctx, **params)  # type: ignore[arg-type]


def test_out_ctx_int_and_numeric_strings() -> None:
    assert resolve(100) == 100
    assert resolve("512") == 512
    assert resolve(" 64 ") == 64
    assert resolve(-1) == -1
    assert resolve("-1") == -1


def test_out_ctx_auto_is_what_fits_with_a_cap() -> None:
    assert resolve("auto") == AUTO_OUT_CTX_CAP  # 8192 - 1000 - 64 = 7128 -> capped at 4096
    assert resolve("AUTO", prompt_tokens=6000) == 8192 - 6000 - 64
    assert resolve("auto", prompt_tokens=6000, margin=0) == 2192
    assert resolve("auto", auto_cap=100) == 100
    with pytest.raises(ContextLimitExceededError) as err:
        resolve("auto", prompt_tokens=8150)
    assert err.value.prompt_tokens == 8150 and err.value.context_limit == 8192


def test_out_ctx_percent_of_the_context() -> None:
    assert resolve("25%") == 2048
    assert resolve("100%") == 8192
    assert resolve(" 12.5 % ") == 1024
    assert resolve("0.001%") == 1  # at least one token


def test_max_tokens_wins() -> None:
    assert resolve("auto", max_tokens=77) == 77
    assert resolve(5, max_tokens=-1) == -1
    assert resolve("garbage", max_tokens=10) == 10  # out_ctx is ignored when max_tokens is given
    for bad in (0, -2, True, 1.5, "10"):
        with pytest.raises(ValidationError) as err:
            resolve("auto", max_tokens=bad)
        assert err.value.field == "max_tokens"


@pytest.mark.parametrize(
    "bad", [0, -2, "0", "-5", "0%", "150%", "-5%", "lots", "", None, True, 3.5, "1e3"]
)
def test_out_ctx_garbage_is_a_validation_error_naming_out_ctx(bad: object) -> None:
    with pytest.raises(ValidationError) as err:
        resolve(bad)
    assert err.value.field == "out_ctx"
    assert "auto" in str(err.value)


def test_resolve_is_available_on_the_manager() -> None:
    manager = ContextManager()
    assert manager.resolve_out_ctx("50%", prompt_tokens=0, context_limit=4096) == 2048
    with pytest.raises(ValidationError) as err:
        manager.resolve_out_ctx("auto", prompt_tokens=-1, context_limit=4096)
    assert err.value.field == "prompt_tokens"
