"""Coverage view of a long user-property table."""
from __future__ import annotations

import pandas as pd
import pytest

from cmdseg_nb import coverage


def long_table():
    t = pd.Timestamp("2024-01-01", tz="UTC")
    rows = [
        ("u1", "plan", '"pro"', "string", t),
        ("u2", "plan", "null", "null", t + pd.Timedelta(days=2)),
        ("u3", "plan", "3", "number", t),
        ("u1", "email", '"a@x.test"', "string", t),
    ]
    return pd.DataFrame(rows, columns=["user_id", "property", "value", "value_type", "updated_at"])


def test_coverage_counts_nulls_types_and_conflicts():
    cov = coverage(long_table())
    assert cov.total_users == 3
    t = cov.table.set_index("property")
    assert list(cov.table["property"]) == ["plan", "email"]
    assert t.loc["plan", "users"] == 3 and t.loc["email", "users"] == 1
    assert t.loc["plan", "null_share"] == pytest.approx(1 / 3)
    assert t.loc["plan", "types"] == "null,number,string"
    assert bool(t.loc["plan", "type_conflict"]) and not bool(t.loc["email", "type_conflict"])
    assert t.loc["plan", "last_update"] == pd.Timestamp("2024-01-03", tz="UTC")
    assert t.loc["email", "share"] == pytest.approx(1 / 3)


def test_coverage_html_draws_bars_and_escapes_names():
    df = long_table()
    df.loc[3, "property"] = "<b>x</b>"
    page = coverage(df)._repr_html_()
    assert "&lt;b&gt;x&lt;/b&gt;" in page and "<b>x</b>" not in page
    assert "width:200.0px" in page  # plan: 3 of 3 users -> a full bar
    assert "type conflict" in page


def test_coverage_needs_the_long_columns():
    with pytest.raises(ValueError, match="value_type"):
        coverage(pd.DataFrame({"user_id": [], "property": [], "updated_at": []}))
