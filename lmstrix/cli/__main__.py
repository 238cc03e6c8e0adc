"""``python -m lmstrix.cli``: the ``lmstrix`` command without its console script."""

from lmstrix.cli import main

main()
