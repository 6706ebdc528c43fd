"""``python -m edgeseg`` runs the command line, as the ``edgeseg`` script does."""
from .cli import main

main()
