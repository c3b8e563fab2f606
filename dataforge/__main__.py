"""``python -m dataforge``: the same CLI as the ``dataforge`` console script."""

from dataforge.cli.main import main

main()
