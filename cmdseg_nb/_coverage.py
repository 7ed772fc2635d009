"""Coverage of a user-property table: which properties are set for how many users, and how.

A view an analyst reads before backfilling: per property, users with it, the share of null
values, the JSON value types seen (a property with several non-null types is a type conflict
Command AI will store as-is), and the last update. Drawn as HTML bars with no plotting library.
"""
from __future__ import annotations

import html

import pandas as pd

__all__ = ["Coverage", "coverage"]

COVERAGE_COLUMNS = {
    "property": "str",
    "users": "int64: users holding the property (null included)",
    "share": "float64: users / all users in the table (0-1)",
    "null_share": "float64: share of those users whose value is null (0-1)",
    "types": "str: JSON types of the values, comma-separated",
    "type_conflict": "bool: more than one non-null JSON type",
    "last_update": "datetime64[us, UTC]: latest winning event time",
}


class Coverage:
    """Per-property coverage of a long user-property table.

    Attributes
    ----------
    table : pandas.DataFrame
        One row per property, sorted by ``users`` descending then name; columns
        :data:`COVERAGE_COLUMNS`.
    total_users : int
        Distinct users in the long table.
    """

    def __init__(self, table: pd.DataFrame, total_users: int):
        self.table = table
        self.total_users = total_users

    def __repr__(self) -> str:
        return (f"<Coverage of {len(self.table)} properties over {self.total_users:,} users>\n"
                + self.table.to_string(index=False))

    def _repr_html_(self) -> str:
        rows = []
        for r in self.table.itertuples(index=False):
            pct = 100.0 * r.share
            nul = 100.0 * r.share * r.null_share
            conflict = ' <b style="color:#b00">type conflict</b>' if r.type_conflict else ""
            last = "" if pd.isna(r.last_update) else r.last_update.strftime("%Y-%m-%d %H:%M UTC")
            rows.append(
                "<tr>"
                f"<td style='text-align:left'><code>{html.escape(str(r.property))}</code></td>"
                "<td style='min-width:220px'>"
                "<div style='background:#eee;width:200px;height:12px;position:relative'>"
                f"<div style='background:#4a7ebb;width:{pct * 2:.1f}px;height:12px'></div>"
                f"<div style='background:#c9c9c9;width:{nul * 2:.1f}px;height:12px;"
                "position:absolute;top:0;left:0'></div></div></td>"
                f"<td>{r.users:,} ({pct:.0f}%)</td><td>{100 * r.null_share:.0f}%</td>"
                f"<td>{html.escape(r.types)}{conflict}</td><td>{last}</td></tr>")
        head = ("<tr><th>property</th><th>users with it (grey: null)</th><th>users</th>"
                "<th>null</th><th>types</th><th>last update</th></tr>")
        return (f"<div><b>Coverage</b>: {len(self.table)} properties over "
                f"{self.total_users:,} users<table>{head}{''.join(rows)}</table></div>")


def coverage(long_df: pd.DataFrame) -> Coverage:
    """Per-property coverage of the long table of :func:`cmdseg_nb.user_properties`.

    Parameters
    ----------
    long_df : pandas.DataFrame
        Needs columns ``user_id``, ``property``, ``value_type`` and ``updated_at``.

    Returns
    -------
    Coverage
        ``.table`` with columns :data:`COVERAGE_COLUMNS`; displays as HTML bars in a notebook.

    Raises
    ------
    ValueError
        When a needed column is missing.
    """
    need = {"user_id", "property", "value_type", "updated_at"}
    missing = need - set(long_df.columns)
    if missing:
        raise ValueError(f"coverage needs the long table's columns; missing {sorted(missing)}")
    total = int(long_df["user_id"].nunique())
    g = long_df.groupby("property", sort=True)
    table = pd.DataFrame({
        "users": g["user_id"].nunique().astype("int64"),
        "null_share": g["value_type"].apply(lambda s: float((s == "null").mean())),
        "types": g["value_type"].apply(lambda s: ",".join(sorted(set(s)))),
        "type_conflict": g["value_type"].apply(lambda s: len(set(s) - {"null"}) > 1),
        "last_update": g["updated_at"].max(),
    }).reset_index()
    table.insert(2, "share", table["users"] / total if total else 0.0)
    table = table.sort_values(["users", "property"], ascending=[False, True]).reset_index(drop=True)
    return Coverage(table, total)
