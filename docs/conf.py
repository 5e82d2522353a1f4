"""Sphinx configuration of the invgraph documentation.

Build it with ``python -m sphinx -W --keep-going -b html docs docs/_build/html``
(``pip install -e ".[docs]"`` first). Warnings are errors.
"""

from __future__ import annotations

import ast
import sys
from pathlib import Path

import nbformat

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # document the checkout, installed or not

import invgraph  # noqa: E402

project = "invgraph"
author = "the invgraph developers"
copyright = "2026, the invgraph developers"
release = invgraph.__version__
version = release

extensions = [
    "myst_nb",  # MyST Markdown pages, and the tutorials as executed notebooks
    "sphinx.ext.autodoc",
    "sphinx.ext.napoleon",
    "sphinx.ext.mathjax",
    "sphinx.ext.viewcode",
]

root_doc = "index"
exclude_patterns = ["_build", "Thumbs.db", ".DS_Store"]

# Markdown pages (MyST). The pages' own code blocks are run by tests/test_docs_examples.py.
myst_enable_extensions: list[str] = []
myst_heading_anchors = 3

# API reference from the Google-style docstrings.
autodoc_member_order = "bysource"
autodoc_typehints = "description"
autodoc_typehints_description_target = "documented_params"
autodoc_default_options = {"members": True, "show-inheritance": True}
napoleon_google_docstring = True
napoleon_numpy_docstring = False
napoleon_use_rtype = False

# The tutorials (tutorials/*.py, scripts in the percent format of Jupyter's text
# notebooks) become notebooks in docs/tutorials/ (git-ignored), which MyST-NB executes
# during the build: each page shows the code, its printed output and its figures. An
# exception in a tutorial (each ends by asserting its result) fails the build.
nb_execution_mode = "force"
nb_execution_timeout = 900
nb_execution_raise_on_error = True
nb_execution_in_temp = True  # figures the scripts save go to a temporary folder
nb_merge_streams = True


def _notebook(script: Path) -> nbformat.NotebookNode:
    """A percent-format script as a notebook: its docstring becomes the title and
    introduction, ``# %% [markdown]`` cells Markdown (the ``# `` prefixes removed),
    ``# %%`` cells code."""
    source = script.read_text()
    docstring = ast.get_docstring(ast.parse(source)) or script.stem
    title, _, introduction = docstring.partition("\n")
    title = title.removeprefix("Tutorial: ").rstrip(".")
    cells = [nbformat.v4.new_markdown_cell(f"# {title[:1].upper()}{title[1:]}\n{introduction}")]
    for chunk in source.split("\n# %%")[1:]:
        header, _, body = chunk.partition("\n")
        lines = body.splitlines()
        if header.strip() == "[markdown]":  # comment lines, then possibly code
            end = next((i for i, line in enumerate(lines) if not line.startswith("#")), len(lines))
            text = [line.removeprefix("#").removeprefix(" ") for line in lines[:end]]
            cells.append(nbformat.v4.new_markdown_cell("\n".join(text).strip()))
            lines = lines[end:]
        if "\n".join(lines).strip():
            cells.append(nbformat.v4.new_code_cell("\n".join(lines).strip()))
    notebook = nbformat.v4.new_notebook(cells=cells)
    notebook.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3"}
    notebook.metadata["language_info"] = {"name": "python"}  # highlighting, executed or not
    return notebook


DOCS_TUTORIALS = Path(__file__).parent / "tutorials"
DOCS_TUTORIALS.mkdir(exist_ok=True)
for _script in sorted((ROOT / "tutorials").glob("*.py")):
    nbformat.write(_notebook(_script), DOCS_TUTORIALS / f"{_script.stem}.ipynb")

html_theme = "furo"
html_title = f"invgraph {release}"
