"""The analyst notebooks run top to bottom on the bundled data (nbclient, never written back)."""
from __future__ import annotations

from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

NOTEBOOKS = Path(__file__).resolve().parent.parent / "notebooks"
ALL = sorted(p.name for p in NOTEBOOKS.glob("[0-9][0-9]_*.ipynb"))


def test_the_three_notebooks_are_there():
    assert ALL == ["01_connect_and_test_event.ipynb", "02_backfill_user_properties.ipynb",
                   "03_bulk_send_events.ipynb"]


@pytest.mark.parametrize("name", ALL)
def test_notebook_is_committed_cleared(name):
    nb = nbformat.read(NOTEBOOKS / name, as_version=4)
    for cell in nb.cells:
        if cell.cell_type == "code":
            assert cell.outputs == [] and cell.execution_count is None, name
    assert "widgets" not in nb.metadata


@pytest.mark.parametrize("name", ALL)
def test_notebook_runs_without_error(name, monkeypatch):
    monkeypatch.delenv("SEGMENT_WRITE_KEY", raising=False)
    nb = nbformat.read(NOTEBOOKS / name, as_version=4)
    client = NotebookClient(nb, timeout=300, kernel_name="python3", store_widget_state=False,
                            resources={"metadata": {"path": str(NOTEBOOKS)}})
    client.execute()  # raises CellExecutionError naming the cell on any error
    errors = [o for c in nb.cells if c.cell_type == "code" for o in c.outputs
              if o.output_type == "error"]
    assert errors == []
    executed = [c for c in nb.cells if c.cell_type == "code"]
    assert executed and all(c.execution_count for c in executed)
