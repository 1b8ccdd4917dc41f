"""`python -m mdth_engine.cli`: the same as `mdth` (how local backends start workers with this interpreter)."""

from mdth_engine.cli import main

if __name__ == "__main__":
    main()
