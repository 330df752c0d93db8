"""The shipped TOML configs (``masktopo train --config NAME``), installed as ``masktopo.configs``.

Each ``NAME.toml`` here is a published or small setting; ``repro/`` holds the reproduction
settings of docs/reproductions.md.
"""
