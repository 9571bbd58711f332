"""`python -m irkit.cli`: the `irkit` command line."""

from irkit.cli import main

main()
