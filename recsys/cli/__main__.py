"""``python -m recsys.cli``, the same as ``recsys``."""

from recsys.cli import main

main()
