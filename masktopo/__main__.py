"""``python -m masktopo`` (and ``torchrun -m masktopo``) runs the command line."""

from masktopo.cli.main import exit_process, main

if __name__ == "__main__":
    exit_process(main())
