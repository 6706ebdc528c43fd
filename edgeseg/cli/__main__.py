"""``python -m edgeseg.cli``: the ``edgeseg`` command line."""
from . import main

main()
