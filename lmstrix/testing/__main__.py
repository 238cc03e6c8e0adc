"""``python -m lmstrix.testing``: run the emulator in the foreground (as ``lmstrix emulator``)."""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from typing import Any

from lmstrix.testing.emulator import serve


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m lmstrix.testing", description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=1234)
    parser.add_argument("--api-generation", choices=["0.3", "0.4"], default="0.4")
    parser.add_argument("--no-jit", action="store_true", help="disable just-in-time loading")
    parser.add_argument("--token", action="append", default=[], help="require this API token")
    parser.add_argument("--auto-fit", action="store_true", help="reduce oversized loads")
    parser.add_argument("--real-clock", action="store_true", help="sleep for simulated work")
    args = parser.parse_args(argv)
    settings: dict[str, Any] = {
        "api_generation": args.api_generation,
        "jit": not args.no_jit,
        "auto_fit": args.auto_fit,
        "clock": "real" if args.real_clock else "simulated",
    }
    if args.token:
        settings.update(require_auth=True, api_tokens=set(args.token))
    serve(args.host, args.port, **settings)


if __name__ == "__main__":
    main()
