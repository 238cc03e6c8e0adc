"""The formats lmstrix's JSON promises, as the CLI tests check them."""

from __future__ import annotations

import re

#: ``iso_utc``: ISO-8601 in UTC with a ``Z``, with microseconds where the time has them.
ISO_UTC = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d{6})?Z$")
