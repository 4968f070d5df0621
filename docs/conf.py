"""
Sphinx configuration for the Digital Spring documentation.
"""

import os
import sys

sys.path.insert(0, os.path.abspath(".."))

project = "Digital Spring"
author = "The Digital Spring developers"
copyright = "2026, The Digital Spring developers"  # noqa: A001

extensions = ["sphinx.ext.autodoc", "sphinx.ext.intersphinx"]
autodoc_member_order = "bysource"
autodoc_typehints = "none"
nitpicky = False
exclude_patterns = ["_build"]
html_theme = "alabaster"
intersphinx_mapping: dict[str, tuple[str, str | None]] = {}
