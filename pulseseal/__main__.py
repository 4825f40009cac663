"""`python -m pulseseal` is the `pulseseal` command."""

from pulseseal.cli import main

main()
