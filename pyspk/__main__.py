"""``python -m pyspk embed|score|export ...``: the ``pyspk`` command (pyspk/bin/pyspk_cli.py)."""

from pyspk.bin.pyspk_cli import main

main()
