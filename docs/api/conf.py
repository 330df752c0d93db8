"""Sphinx configuration of masktopo's API reference (built by tests/test_api_docs.py with
warnings as errors, so that the numpy-style docstrings cannot rot)."""

import os
import sys

sys.path.insert(0, os.path.abspath("../.."))

project = "masktopo"
author = "The masktopo developers"
extensions = ["sphinx.ext.autodoc", "sphinx.ext.napoleon"]
napoleon_google_docstring = False
napoleon_numpy_docstring = True
napoleon_use_rtype = False
napoleon_use_ivar = True  # "Attributes" as fields: no duplicate of the dataclass fields
autodoc_default_options = {"members": True, "undoc-members": False, "show-inheritance": True}
autodoc_member_order = "bysource"
autodoc_typehints = "none"  # the docstrings say the types
autodoc_mock_imports = []
nitpicky = False
suppress_warnings = ["ref.python"]
exclude_patterns = ["_build"]
html_theme = "alabaster"
