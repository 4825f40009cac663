"""`python -m pulseseal` is the `pulseseal` command."""

from shell.cli import main

main()
