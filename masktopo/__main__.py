"""``python -m masktopo`` (and ``torchrun -m masktopo``) runs the command line."""

from masktopo.cli.main import main

if __name__ == "__main__":
    raise SystemExit(main())
