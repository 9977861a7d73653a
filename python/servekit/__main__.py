"""``python -m servekit`` runs the ``servekit`` command."""

from servekit.cli import main

main(prog_name="servekit")
