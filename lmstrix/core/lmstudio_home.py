"""Where LM Studio keeps its files on this machine (its "home").

In this order: the ``lmstudio.home`` setting (``LMSTRIX_LMSTUDIO__HOME``); the directory named
by the first line of ``~/.lmstudio-home-pointer`` (LM Studio writes it when the home was moved);
``~/.lmstudio`` (LM Studio 0.3 and later); ``~/.cache/lm-studio`` (older versions).
"""

from __future__ import annotations

from pathlib import Path

from lmstrix.domain.errors import ConfigurationError

POINTER_FILE = ".lmstudio-home-pointer"
USUAL_HOMES = (".lmstudio", ".cache/lm-studio")  # under the user's home directory


def _pointed_home(user_home: Path) -> Path | None:
    try:
        first = (user_home / POINTER_FILE).read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError):
        return None
    home = Path(first[0].strip()).expanduser() if first and first[0].strip() else None
    return home if home is not None and home.is_dir() else None


def find_lmstudio_home(
    configured: str | Path | None = None, *, user_home: Path | None = None
) -> Path:
    """LM Studio's home directory; ``ConfigurationError`` saying where it looked when there is
    none. ``configured`` (the ``lmstudio.home`` setting) wins and must be a directory."""
    if configured is not None and str(configured).strip():
        home = Path(configured).expanduser()
        if not home.is_dir():
            raise ConfigurationError(
                f"lmstudio.home {str(home)!r} is not a directory; point it (or "
                "LMSTRIX_LMSTUDIO__HOME) at LM Studio's home, the directory that holds models/ "
                "and .internal/",
                key="lmstudio.home",
            )
        return home
    user_home = user_home or Path.home()
    pointed = _pointed_home(user_home)
    if pointed is not None:
        return pointed
    for candidate in (user_home / name for name in USUAL_HOMES):
        if candidate.is_dir():
            return candidate
    looked = ", ".join(str(user_home / n) for n in (POINTER_FILE, *USUAL_HOMES))
    raise ConfigurationError(
        f"LM Studio's home directory was not found (looked at {looked}); set lmstudio.home "
        "in the config file or LMSTRIX_LMSTUDIO__HOME",
        key="lmstudio.home",
    )


__all__ = ["POINTER_FILE", "USUAL_HOMES", "find_lmstudio_home"]
