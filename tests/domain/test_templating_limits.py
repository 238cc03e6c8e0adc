"""Rendering is bounded: reference count, rendered size, unterminated placeholders."""

from __future__ import annotations

import pytest
from hypothesis import event, given, settings
from hypothesis import strategies as st

from lmstrix.domain import templating
from lmstrix.domain.errors import ValidationError


def fan_out_library(levels: int, refs: int) -> dict[str, str]:
    """``l0`` refers ``refs`` times to ``l1``, which refers ``refs`` times to ``l2``, ..."""
    lib = {f"l{i}": " ".join([f"{{{{l{i + 1}}}}}"] * refs) for i in range(levels)}
    lib[f"l{levels}"] = "x"
    return lib


def test_exponential_references_stop_at_the_reference_limit() -> None:
    lib = fan_out_library(8, 10)  # 10^8 copies of "x" if nothing stopped it
    with pytest.raises(ValidationError) as err:
        templating.render("{{l0}}", {}, lib, name="top")
    assert err.value.field == "template" and err.value.value == "top"
    message = str(err.value)
    assert f"more than {templating.MAX_REFERENCES} placeholders" in message
    assert "max_references" in message and "l0 -> l1" in message


def test_size_limit_names_the_prompt_and_the_limit() -> None:
    with pytest.raises(ValidationError) as err:
        templating.render("{{doc}}{{doc}}", {"doc": "y" * 600}, name="twice", max_chars=1000)
    assert err.value.value == "twice"
    assert "more than 1000 characters" in str(err.value)
    assert "max_rendered_chars" in str(err.value)
    # at the limit exactly it renders
    assert templating.render("{{doc}}{{doc}}", {"doc": "y" * 500}, max_chars=1000) == "y" * 1000


def test_within_the_limits_fan_out_renders_everything() -> None:
    lib = fan_out_library(3, 10)  # 1 + 10 + 100 + 1000 placeholders
    out = templating.render("{{l0}}", {}, lib, max_references=1111)
    assert out.split() == ["x"] * 1000
    with pytest.raises(ValidationError):
        templating.render("{{l0}}", {}, lib, max_references=1110)


@pytest.mark.parametrize(
    ("template", "line", "column", "shown"),
    [
        ("Hello {{name", 1, 7, "{{name"),
        ("first line\n  {{ user.name } and more", 2, 3, "{{ user.name"),
        ("{{a {{b}}", 1, 1, "{{a"),
    ],
)
def test_unterminated_placeholder_is_reported(
    template: str, line: int, column: int, shown: str
) -> None:
    with pytest.raises(ValidationError) as err:
        templating.render(template, {"a": "1", "b": "2", "name": "n", "user": {"name": "u"}})
    message = str(err.value)
    assert err.value.field == "template"
    assert f"unterminated placeholder {shown!r} at line {line}, column {column}" in message


def test_unterminated_placeholder_in_a_referenced_prompt_names_that_prompt() -> None:
    lib = {"outer": "see {{inner}}", "inner": "broken {{x"}
    with pytest.raises(ValidationError) as err:
        templating.render("{{outer}}", {"x": "1"}, lib, name="top")
    assert err.value.value == "inner"
    assert "line 1, column 8 of prompt 'inner'" in str(err.value)


def test_closed_non_placeholders_are_not_unterminated() -> None:
    for text in ("{{x|upper}}", '{{"json": {"a": 1}}}', "{{#if x}} y {{/if}}", "{{{x}}}", "}} {{"):
        assert templating.unterminated(text) is None, text
    assert templating.render("{{{x}}}", {"x": "v"}) == "{v}"


# -- property: random libraries always end, with a result or the typed error ---------------------

NAMES = [f"p{i}" for i in range(6)]
_segment = st.one_of(
    st.text(alphabet="ab {}\n.", max_size=6),
    st.sampled_from(NAMES).map(lambda n: f"{{{{{n}}}}}"),
    st.sampled_from(NAMES).map(lambda n: f"{{{{ {n} "),  # maybe unterminated
    st.just("{{var}}"),
    st.just("{{missing}}"),
)
_template = st.lists(_segment, max_size=12).map("".join)


@pytest.mark.timeout(120)  # a hang fails the test instead of blocking the suite
@settings(max_examples=400, deadline=None)
@given(
    top=_template,
    library=st.fixed_dictionaries({n: _template for n in NAMES}),
    var=st.text(max_size=40),
    max_references=st.integers(1, 300),
    max_chars=st.integers(1, 5000),
)
def test_random_nesting_ends_with_a_result_or_validation_error(
    top: str, library: dict[str, str], var: str, max_references: int, max_chars: int
) -> None:
    try:
        out = templating.render(
            top,
            {"var": var},
            library,
            max_references=max_references,
            max_chars=max_chars,
        )
    except ValidationError as exc:
        assert exc.field in ("template", "variables")
        event(f"refused: {exc.field}: {' '.join(exc.reason.split()[:2])}")
        return
    event("rendered")
    assert isinstance(out, str) and len(out) <= max_chars
    assert len(templating.PLACEHOLDER.findall(top)) <= max_references


@pytest.mark.timeout(120)
@settings(max_examples=100, deadline=None)
@given(levels=st.integers(2, 10), refs=st.integers(2, 12))
def test_deep_fan_out_is_refused_when_it_would_exceed_the_limit(levels: int, refs: int) -> None:
    lib = fan_out_library(levels, refs)
    total = sum(refs**i for i in range(1, levels + 1)) + 1  # placeholders a full render fills
    try:
        out = templating.render("{{l0}}", {}, lib, max_references=500)
    except ValidationError as exc:
        assert total > 500 or "deeper than" in str(exc)
        return
    assert total <= 500 and out.split() == ["x"] * refs**levels
