"""The public surface: ``from lmstrix import X`` for every documented name, cheaply."""

from __future__ import annotations

import importlib
import re
import subprocess
import sys
from pathlib import Path

import pytest

import lmstrix

README = Path(__file__).resolve().parents[1] / "README.md"


def _documented_names() -> set[str]:
    """The names the README's "Public names" line lists."""
    text = README.read_text(encoding="utf-8")
    m = re.search(r"^Public names[^\n]*:\n((?:.+\n)+?)\n", text, flags=re.M)
    assert m, "README.md lost its 'Public names ...:' paragraph"
    return set(re.findall(r"`(\w+)`", m.group(1)))


def test_all_matches_the_readme() -> None:
    public = set(lmstrix.__all__) - {"__version__"}
    assert public == set(lmstrix._PUBLIC)
    assert public == _documented_names()


@pytest.mark.parametrize("name", sorted(set(lmstrix.__all__) - {"__version__"}))
def test_each_name_is_the_object_at_its_documented_path(name: str) -> None:
    module = importlib.import_module(lmstrix._PUBLIC[name])
    assert getattr(lmstrix, name) is getattr(module, name)


def test_unknown_names_raise_attribute_error() -> None:
    with pytest.raises(AttributeError, match="no_such_name"):
        lmstrix.no_such_name  # noqa: B018


def test_star_import_and_dir_list_every_name() -> None:
    namespace: dict[str, object] = {}
    exec("from lmstrix import *", namespace)
    assert set(lmstrix.__all__) <= set(namespace)
    assert set(lmstrix.__all__) <= set(dir(lmstrix))


def _modules_after(statement: str) -> set[str]:
    code = f"import sys\n{statement}\nprint('\\n'.join(sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return set(out.stdout.split())


@pytest.mark.parametrize(
    "statement",
    [
        "import lmstrix",
        "import lmstrix.domain.scheduler",
        "import lmstrix.domain.context_search",
        "import lmstrix.domain.model",
        "import lmstrix.domain.needle",
        "import lmstrix.domain.openai_batch",
        "import lmstrix.domain.verdicts",
    ],
)
def test_importing_the_package_or_a_pure_module_loads_no_io_library(statement: str) -> None:
    loaded = _modules_after(statement)
    heavy = {"sqlalchemy", "alembic", "redis", "httpx", "dramatiq", "click", "rich"}
    assert not {m.split(".")[0] for m in loaded} & heavy
    assert not any(m.startswith(("lmstrix.db", "lmstrix.jobs", "lmstrix.api.")) for m in loaded)
