"""``python -m edgeseg.cli``: the ``edgeseg`` command line."""
from edgeseg.cli import main

main()
