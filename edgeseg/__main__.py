"""``python -m edgeseg`` runs the command line, as the ``edgeseg`` script does."""
from edgeseg.cli import main

main()
