"""PromptLoader and the templating rules: TOML files, dotted names, {{var}}, references, errors."""

from __future__ import annotations

import asyncio
import datetime as dt
from collections.abc import Iterator
from pathlib import Path

import pytest

from lmstrix.api.exceptions import ConfigurationError, ValidationError
from lmstrix.core.inference_manager import (
    AsyncInferenceManager,
    InferenceManager,
    InferenceResult,
)
from lmstrix.core.prompt_loader import key_lines
from lmstrix.domain import templating
from lmstrix.jobs import embedded
from lmstrix.loaders.prompt_loader import (
    PromptLibrary,
    PromptLoader,
    PromptTemplate,
    parse_prompts,
)
from lmstrix.testing import LMStudioEmulator
from lmstrix.utils.config import Config

MODEL = "llama-3.2-1b-instruct"

LIBRARY = '''\
# a prompt library
greeting = "Hello {{ name }}!"
year = 2025

[templates]
base = "You are a helpful assistant."
instruction = """{{templates.base}}
Task: {{task}}"""

[summary]
template = "Summarize in {{words}} words: {{text}}"
short = "{{summary}} Be brief."

[aps]
prompt = "APS: {{text}}"

[loop]
a = "{{loop.b}}"
b = "{{loop.a}}"
'''


@pytest.fixture
def loader() -> PromptLoader:
    return PromptLoader()


@pytest.fixture
def library(tmp_path: Path, loader: PromptLoader) -> PromptLibrary:
    path = tmp_path / "templates.toml"
    path.write_text(LIBRARY, encoding="utf-8")
    return loader.load_prompts(path)


def test_load_get_render_round_trip(loader: PromptLoader, library: PromptLibrary) -> None:
    prompt = loader.get_prompt("greeting", library)
    assert isinstance(prompt, PromptTemplate) and prompt == "Hello {{ name }}!"
    assert prompt.placeholders == ["name"]
    assert loader.render_prompt(prompt, {"name": "Ada"}) == "Hello Ada!"
    # nested tables by dotted name; a reference to another prompt from the document root
    instruction = loader.get_prompt("templates.instruction", library)
    assert loader.render_prompt(instruction, {"task": "sum"}) == (
        "You are a helpful assistant.\nTask: sum"
    )


def test_tables_with_template_or_prompt_key_are_prompts(
    loader: PromptLoader, library: PromptLibrary
) -> None:
    short = loader.get_prompt("summary.short", library)
    assert loader.render_prompt(short, {"words": 5, "text": "T"}) == (
        "Summarize in 5 words: T Be brief."
    )
    aps = loader.get_prompt("aps", library)
    assert loader.render_prompt(aps, {"text": "x"}) == "APS: x"
    assert "summary.short" in library.names() and "aps" in library.names()


def test_missing_variable_names_it_and_where(loader: PromptLoader, library: PromptLibrary) -> None:
    with pytest.raises(ValidationError) as err:
        loader.render_prompt(loader.get_prompt("summary.short", library), {"text": "x"})
    assert err.value.field == "variables"
    assert err.value.value == ["words"]
    msg = str(err.value)
    assert "{{words}}" in msg and "used by 'summary'" in msg
    assert "templates.toml, line 12" in msg  # where summary.short is defined


def test_all_missing_variables_are_named_at_once() -> None:
    with pytest.raises(ValidationError) as err:
        templating.render("{{a}} and {{ b }} and {{a}}", {})
    assert err.value.value == ["a", "b"]


def test_variables_win_over_library_keys_and_are_not_rescanned() -> None:
    library = {"text": "FROM THE FILE", "secret": "S3CRET"}
    out = templating.render("[{{text}}]", {"text": "{{secret}}"}, library)
    # the caller's value wins (upstream let the file win), and it is inserted verbatim
    assert out == "[{{secret}}]"


def test_values_are_converted_and_nested_variables_reached() -> None:
    out = templating.render(
        "{{n}} {{f}} {{b}} {{d}} {{user.name}}",
        {"n": 3, "f": 1.5, "b": True, "d": dt.date(2025, 1, 2), "user": {"name": "Ada"}},
    )
    assert out == "3 1.5 true 2025-01-02 Ada"
    with pytest.raises(ValidationError) as err:
        templating.render("{{xs}}", {"xs": [1, 2]})
    assert err.value.field == "variables.xs"


def test_non_placeholders_stay_verbatim() -> None:
    text = 'JSON {{"a": 1}} and {{#if x}} and { single }'
    assert templating.render(text, {}) == text


def test_cycles_and_bad_references(loader: PromptLoader, library: PromptLibrary) -> None:
    with pytest.raises(ValidationError) as err:
        loader.render_prompt(loader.get_prompt("loop.a", library), {})
    assert "cycle: loop.a -> loop.b -> loop.a" in str(err.value)
    with pytest.raises(ValidationError) as err:
        templating.render("{{templates}}", {}, library)
    assert "refers to a dict" in str(err.value)
    # scalars in the library are inserted as text
    assert templating.render("{{year}}", {}, library) == "2025"


def test_reference_depth_is_bounded() -> None:
    lib = {f"p{i}": f"{{{{p{i + 1}}}}}" for i in range(15)}
    lib["p15"] = "end"
    with pytest.raises(ValidationError) as err:
        templating.render("{{p0}}", {}, lib)
    assert "deeper than" in str(err.value)
    assert templating.render("{{p8}}", {}, lib) == "end"


def test_unknown_prompt_names_file_and_close_matches(
    loader: PromptLoader, library: PromptLibrary
) -> None:
    with pytest.raises(ConfigurationError) as err:
        loader.get_prompt("sumary.short", library)
    msg = str(err.value)
    assert "templates.toml" in msg and "did you mean summary.short" in msg
    assert err.value.key == "sumary.short"


def test_table_and_number_are_not_prompts(loader: PromptLoader, library: PromptLibrary) -> None:
    with pytest.raises(ConfigurationError) as err:
        loader.get_prompt("templates", library)
    assert "line 5" in str(err.value) and "templates.base" in str(err.value)
    with pytest.raises(ConfigurationError) as err:
        loader.get_prompt("year", library)
    assert "is a int" in str(err.value) and "line 3" in str(err.value)


def test_bad_files(tmp_path: Path, loader: PromptLoader) -> None:
    with pytest.raises(ConfigurationError, match="not found"):
        loader.load_prompts(tmp_path / "missing.toml")
    with pytest.raises(ConfigurationError, match="is a directory"):
        loader.load_prompts(tmp_path)
    bad = tmp_path / "bad.toml"
    bad.write_text('ok = "x"\n\nbroken = \n', encoding="utf-8")
    with pytest.raises(ConfigurationError) as err:
        loader.load_prompts(bad)
    assert f"{bad}, line 3, column" in str(err.value)
    latin = tmp_path / "latin.toml"
    latin.write_bytes('a = "x"\nb = "caf\xe9"\n'.encode("latin-1"))
    with pytest.raises(ConfigurationError, match="line 2: not UTF-8"):
        loader.load_prompts(latin)
    big = tmp_path / "big.toml"
    big.write_text("a = 'x'\n" * 100, encoding="utf-8")
    with pytest.raises(ConfigurationError, match="more than"):
        PromptLoader(max_file_bytes=100).load_prompts(big)


def test_a_1kb_file_of_exponential_references_is_refused(tmp_path: Path) -> None:
    """8 levels of 10 references each: 10^8 copies, from a file of about 1 KB."""
    lines = [f'l{i} = "' + " ".join([f"{{{{l{i + 1}}}}}"] * 10) + '"' for i in range(8)]
    path = tmp_path / "bomb.toml"
    path.write_text("\n".join([*lines, 'l8 = "boom"']) + "\n", encoding="utf-8")
    assert path.stat().st_size < 1200
    with pytest.raises(ValidationError) as err:
        PromptLoader().render_template(path, "l0")
    assert err.value.field == "template" and err.value.value == "l0"
    assert f"{path}, line 1" in str(err.value) and "max_references" in str(err.value)
    with pytest.raises(ValidationError) as err:
        PromptLoader(max_references=10**9, max_rendered_chars=5000).render_template(path, "l0")
    assert "more than 5000 characters" in str(err.value)
    with pytest.raises(ValidationError, match="max_references"):
        PromptLoader(max_references=0)


def test_unterminated_placeholder_in_a_file_names_prompt_and_position(tmp_path: Path) -> None:
    path = tmp_path / "typo.toml"
    path.write_text('[mail]\nbody = """Dear {{name,\nthanks"""\n', encoding="utf-8")
    with pytest.raises(ValidationError) as err:
        PromptLoader().render_template(path, "mail.body", {"name": "Ann"})
    message = str(err.value)
    assert "unterminated placeholder '{{name' at line 1, column 6" in message
    assert f"'mail.body' ({path}, line 2)" in message


def test_plain_strings_and_dicts_work_without_a_file(loader: PromptLoader) -> None:
    assert loader.render_prompt("Hi {{who}}", {"who": "you"}) == "Hi you"
    prompt = loader.get_prompt("a.b", {"a": {"b": "{{c}}!"}, "c": "see"})
    assert loader.render_prompt(prompt) == "see!"
    lib = parse_prompts('x = "1"', "inline.toml")
    assert lib.source == "inline.toml" and lib == {"x": "1"}


def test_render_template_in_one_call(tmp_path: Path, loader: PromptLoader) -> None:
    path = tmp_path / "t.toml"
    path.write_text(LIBRARY, encoding="utf-8")
    assert loader.render_template(path, "greeting", {"name": "Bo"}) == "Hello Bo!"


def test_key_lines_skip_multiline_strings() -> None:
    text = 'a = """\nfake = 1\n"""\n[t."q.k"]\nb = 2\nc.d = 3\n'
    lines = key_lines(text)
    assert lines == {"a": 1, "t.q.k": 4, "t.q.k.b": 5, "t.q.k.c.d": 6}


# -- infer_with_template over the queue (embedded mode, SQLite, the emulator over HTTP) --------


@pytest.fixture
def manager(
    lmstudio_emulator: LMStudioEmulator, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[InferenceManager]:
    monkeypatch.delenv("LMSTRIX_REDIS_URL", raising=False)
    config = Config({"hosts": [{"name": "h1", "url": lmstudio_emulator.url}]})
    m = InferenceManager(
        timeout=30, config=config, database_url=f"sqlite:///{tmp_path / 'lmstrix.db'}"
    )
    yield m
    m.close()
    embedded.stop_all()


def test_infer_with_template(manager: InferenceManager, tmp_path: Path) -> None:
    path = tmp_path / "t.toml"
    path.write_text('[echo]\nbase = "say {{greeting}}"\nfull = "{{echo.base}}, {{name}}!"\n')
    result = manager.infer_with_template(
        "echo.full", MODEL, str(path), {"greeting": "Hello", "name": "Ada"}, max_tokens=16
    )
    assert result.succeeded and result.response == "Hello, Ada!"
    request = manager.service.store.get(result.job_id).request or {}
    assert request["prompt"] == "say Hello, Ada!" and request["max_tokens"] == 16


def test_infer_with_template_missing_variable_queues_nothing(
    manager: InferenceManager, tmp_path: Path
) -> None:
    path = tmp_path / "t.toml"
    path.write_text('ask = "say {{greeting}} {{name}}"\n')
    with pytest.raises(ValidationError) as err:
        manager.infer_with_template("ask", MODEL, path, {"greeting": "hi"})
    assert err.value.value == ["name"] and "{{name}}" in str(err.value)
    assert manager.service.store.list_jobs() == []


def test_async_infer_with_template(
    lmstudio_emulator: LMStudioEmulator, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("LMSTRIX_REDIS_URL", raising=False)
    path = tmp_path / "t.toml"
    path.write_text('ask = "say {{word}}"\n')
    config = Config({"hosts": [{"name": "h1", "url": lmstudio_emulator.url}]})

    async def main() -> list[InferenceResult]:
        m = AsyncInferenceManager(
            timeout=30, config=config, database_url=f"sqlite:///{tmp_path / 'a.db'}"
        )
        try:
            return await asyncio.gather(
                *(m.infer_with_template("ask", MODEL, path, {"word": w}) for w in ("one", "two"))
            )
        finally:
            await m.aclose()

    try:
        results = asyncio.run(main())
    finally:
        embedded.stop_all()
    assert [r.response for r in results] == ["one", "two"]
