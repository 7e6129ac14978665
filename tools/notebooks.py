"""Keeps notebooks/*.ipynb the output-free pair of notebooks/*.py (jupytext percent format, what reviews read).

    python tools/notebooks.py sync    # write every .ipynb from its .py (outputs stripped, Colab metadata)
    python tools/notebooks.py check   # exit 1 when an .ipynb is missing, stale or holds outputs

Edit the .py files (or edit in Jupyter/Colab and save: jupytext pairs them), then run `sync`; `make test`
checks the pairing (tests/test_notebooks.py) and runs every notebook with small parameters.
"""

import hashlib
import pathlib
import sys

import jupytext
import nbformat

NOTEBOOKS = pathlib.Path(__file__).resolve().parent.parent / "notebooks"
COLAB = {"provenance": [], "toc_visible": True}
REPOSITORY = "https://github.com/tfm-nlp/tfm"  # where the notebooks' install cells and the README's Colab links point


def sources():
    return sorted(NOTEBOOKS.glob("[0-9][0-9]_*.py"))


def render(source):
    """The .ipynb text for `source`: its cells, no outputs, no execution counts, Colab's metadata."""
    notebook = jupytext.read(source)
    notebook.metadata.pop("jupytext", None)
    notebook.metadata["colab"] = COLAB
    notebook.metadata["language_info"] = {"name": "python"}
    seen = set()
    for cell in notebook.cells:
        # Cell ids from the content (nbformat draws random ones), so a sync of an unchanged .py changes nothing.
        cell.id = hashlib.sha1(cell.source.encode("utf-8")).hexdigest()[:8]
        while cell.id in seen:
            cell.id = hashlib.sha1(cell.id.encode("utf-8")).hexdigest()[:8]
        seen.add(cell.id)
        cell.metadata.pop("lines_to_next_cell", None)
        if cell.cell_type == "code":
            cell.outputs, cell.execution_count = [], None
    return nbformat.writes(notebook) + "\n"


def problems():
    """One line per notebook whose .ipynb is missing or not `render` of its .py."""
    found = []
    for source in sources():
        target = source.with_suffix(".ipynb")
        if not target.exists():
            found.append(f"{target.name}: missing (run python tools/notebooks.py sync)")
        elif target.read_text(encoding="utf-8") != render(source):
            found.append(f"{target.name}: differs from {source.name} or holds outputs (run python tools/notebooks.py sync)")
    for target in NOTEBOOKS.glob("*.ipynb"):
        if not target.with_suffix(".py").exists():
            found.append(f"{target.name}: has no {target.with_suffix('.py').name} pair")
    return found


def main(argv):
    if argv[1:] == ["sync"]:
        for source in sources():
            source.with_suffix(".ipynb").write_text(render(source), encoding="utf-8")
            print("wrote", source.with_suffix(".ipynb").relative_to(NOTEBOOKS.parent))
        return 0
    if argv[1:] == ["check"]:
        found = problems()
        print("\n".join(found) or "notebooks in sync")
        return 1 if found else 0
    print(__doc__)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv))
