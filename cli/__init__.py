"""The ``masktopo`` command line, thin over the library.

One module per subcommand (:mod:`cli.analyze`, :mod:`cli.info`, :mod:`cli.demo`), each with
``add_parser(subparsers)`` and ``run(args) -> int``; :mod:`cli.main` wires them together and turns
user errors into one line on stderr. Nothing here imports torch, numpy or the analysis package at
import time, so ``masktopo --help`` answers at once: the handlers import what they need.
"""
