"""The nesting bound of the JSON and TOML lmstrix reads: a parse error, never RecursionError."""

from __future__ import annotations

import json
import random
import tomllib

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from lmstrix.domain.nesting import MAX_NESTING, loads_json, loads_toml, too_deep_key

DEEP = 5000  # far past the interpreter's recursion limit


def test_json_at_the_limit_parses_and_one_more_level_is_refused_with_its_position() -> None:
    ok = "[" * MAX_NESTING + "]" * MAX_NESTING
    assert loads_json(ok) == json.loads(ok)
    text = '{"a": "[[[ in a string ]]]",\n "b": ' + "[" * DEEP + "]" * DEEP + "}"
    with pytest.raises(json.JSONDecodeError) as err:
        loads_json(text)
    assert err.value.lineno == 2
    # the bracket that opened level MAX_NESTING + 1 (the object is level 1)
    assert err.value.colno == len(' "b": ') + MAX_NESTING
    assert f"nested more than {MAX_NESTING} levels deep" in err.value.msg


def test_brackets_inside_strings_and_escapes_do_not_count() -> None:
    inner = '"\\"[[[[' + "[" * DEEP + '"'
    assert loads_json(f"[{inner}]") == [json.loads(inner)]
    assert loads_json(b'{"x": [1, 2]}') == {"x": [1, 2]}


def test_toml_inline_arrays_and_tables_are_bounded() -> None:
    for body in ("[" * DEEP + "]" * DEEP, "{ b = " * DEEP + "1" + " }" * DEEP):
        text = f'# a comment [[[[\nname = "x [[[["\nvalue = {body}\n'
        with pytest.raises(tomllib.TOMLDecodeError) as err:
            loads_toml(text)
        assert "(at line 3, column" in str(err.value)
        assert f"nested more than {MAX_NESTING} levels" in str(err.value)


def test_toml_dotted_keys_are_bounded_and_named() -> None:
    for text in (".".join(["k"] * DEEP) + " = 1\n", "[" + ".".join(["t"] * DEEP) + "]\nx = 1\n"):
        with pytest.raises(tomllib.TOMLDecodeError) as err:
            loads_toml(text)
        assert "key k.k.k" in str(err.value) or "key t.t.t" in str(err.value)
        assert "levels deep" in str(err.value)
    ok = ".".join(["k"] * MAX_NESTING) + " = 1\n"
    assert too_deep_key(loads_toml(ok)) is None
    multi = "text = \"\"\"\n[[[[[[\n\"\"\"\nlit = '''{{{{'''\n"
    assert loads_toml(multi) == {"text": "[[[[[[\n", "lit": "{{{{"}


def test_value_walk_names_the_path() -> None:
    value: object = "leaf"
    for _ in range(10):
        value = {"a": [value]}
    assert too_deep_key(value, limit=5) == ["a", "[0]", "a", "[0]", "a"]
    assert too_deep_key(value, limit=20) is None


def nested(kinds: list[str], key: str = '"k": ') -> str:
    """Arrays (``[``) and objects (``{``) nested in the order given, around ``1``; ``key``
    introduces an object's one value (JSON's ``"k": ``, TOML's ``k = ``)."""
    opening = "".join("[" if k == "[" else "{" + key for k in kinds)
    return opening + "1" + "".join("]" if k == "[" else "}" for k in reversed(kinds))


@settings(max_examples=300, deadline=None)
@given(depth=st.integers(1, 3000), rng=st.randoms(use_true_random=False), limit=st.integers(1, 100))
def test_random_nesting_parses_or_is_refused_never_recursion_error(
    depth: int, rng: random.Random, limit: int
) -> None:
    kinds = [rng.choice("[{") for _ in range(depth)]
    text, toml = nested(kinds), "v = " + nested(kinds, "k = ")
    if len(kinds) <= limit:
        assert loads_json(text, limit=limit) == json.loads(text)
        assert loads_toml(toml, limit=limit) == {"v": json.loads(text)}
    else:
        with pytest.raises(json.JSONDecodeError):
            loads_json(text, limit=limit)
        with pytest.raises(tomllib.TOMLDecodeError):
            loads_toml(toml, limit=limit)
