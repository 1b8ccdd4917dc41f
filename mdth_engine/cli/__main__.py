"""`python -m mdth_engine.cli`: the same as the `mdth` script (used to start workers)."""

from mdth_engine.cli import main

main()
