"""The loader's de-duplication on the warehouse fast path: twins of ``tracks`` rows, copies.

The loader keeps one row per event (``_selects.table_selects``): a ``tracks`` row whose twin is
in a per-event table (same id, or same content) is left out, and the copies of one message are
de-duplicated per ``(type, message id)``: the copy received last, the loader's hash of the
rebuilt event where copies tied on ``received_at`` differ. The fast path reproduces both
without rebuilding every event: the twin filter runs on the lean selects, id match first
(:func:`_tracks_without_twins`); only the *special* rows (ids seen more than once, rows without
id) are de-duplicated, and only those that need the hash are read again and rebuilt as JSON
(:func:`_dedupe_special`). The steps that call these are :mod:`cmdseg_nb._plan_run`'s;
``_TEMP``, the names of a run's temporary tables, lives here, the lower of the two modules
that use it.
"""
from __future__ import annotations

from ._db import ident
from ._plan import Plan
from ._plan_cells import _lean_selects, _union
from ._warehouse import per_event_tables

__all__: list[str] = []  # private helpers only: _plan_run imports them by name

_TEMP = ("cmdseg_plan_dups", "cmdseg_plan_special_rows", "cmdseg_plan_hash_ids", "cmdseg_plan_slow",
         "cmdseg_plan_agg", "cmdseg_plan_dyn", "cmdseg_plan_keys", "cmdseg_plan_cand",
         "cmdseg_plan_win", "cmdseg_plan_users", "cmdseg_plan_props", "cmdseg_plan_tracks")


def _slow_selects(export, p: Plan, tables: list[str], ids: str) -> dict[str, str]:
    """Rebuilt-event selects (with ``event_json``) of ``tables``; ``tracks`` keeps the twin filter."""
    from ._selects import table_selects
    by_name = {t.name: t for t in export.tables if t.event_type is not None}
    pt = {tp.name: tp.columns for tp in p.tables}
    out = {}
    for name in tables:
        t = by_name[name]
        sel = table_selects([t], passthrough=pt)[0][1]
        # read only the rows that need the hash: filter the files' rows before the rebuild
        mid = f"t.{ident(t.columns['id' if 'id' in t.columns else 'message_id'])}" if (
            "id" in t.columns or "message_id" in t.columns) else "NULL"
        src = f"FROM {ident(t.view)} AS t"
        assert sel.count(src) == 1
        sel = sel.replace(src, f"FROM (SELECT * FROM {ident(t.view)} AS t WHERE {mid} IS NULL OR "
                               f"CAST({mid} AS VARCHAR) IN (SELECT message_id FROM {ids})) AS t")
        twins = _per_event_twins(export) if name == "tracks" else None
        if twins:
            pe, by_id, by_content = twins
            sel = (f"SELECT * FROM ({sel}) AS w WHERE NOT EXISTS (SELECT 1 FROM ({pe}) AS x WHERE {by_id}) "
                   f"AND NOT EXISTS (SELECT 1 FROM ({pe}) AS x WHERE {by_content})")
        out[name] = sel
    return out


def _per_event_twins(export) -> tuple[str, str, str] | None:
    """``_selects._twin_filters`` over the export's per-event tables (lean selects); None when
    there are none."""
    from ._selects import _twin_filters, table_selects
    per_event = per_event_tables(export.tables)
    if not per_event:
        return None
    return _twin_filters(q for _n, q in table_selects(per_event, lean=True))


def _tracks_without_twins(con, export, tracks: str) -> str:
    """The ``tracks`` rows without a twin in a per-event table, as the loader keeps them (see
    ``_selects.table_selects``), held in a temporary table; returns a SELECT of it.

    The match on id runs first; the match on content only over the rows it leaves (usually
    none: Segment's twins share their id), so the per-event tables' content is hashed only
    when needed. When the per-event tables hold at least as many rows as ``tracks`` (every
    row may have its twin, as in Segment's warehouses), the rows the id match leaves are
    counted first on ids alone; with none, ``tracks`` is left out without reading its other
    columns (20M events: 1.7 s against 2.6 s). With some, the id match runs a second time,
    over the whole rows."""
    twins = _per_event_twins(export)
    if twins is None:
        return tracks
    pe, by_id, by_content = twins
    unmatched = f"FROM ({tracks}) AS w WHERE NOT EXISTS (SELECT 1 FROM ({pe}) AS x WHERE {by_id})"
    rows = export._report.rows_read
    left_n = None
    if "tracks" in rows and rows["tracks"] <= sum(rows.get(t.name, 0) for t in per_event_tables(export.tables)):
        left_n = con.execute(f"SELECT count(*) {unmatched}").fetchall()[0][0]
        if not left_n:
            return f"SELECT * FROM ({tracks}) WHERE FALSE"
    t, left = _TEMP[-1], f"{_TEMP[-1]}_id"
    con.execute(f"CREATE OR REPLACE TEMP TABLE {left} AS SELECT * {unmatched}")
    if left_n or con.execute(f"SELECT count(*) FROM {left}").fetchall()[0][0]:
        con.execute(f"CREATE OR REPLACE TEMP TABLE {t} AS SELECT * FROM {left} AS w "
                    f"WHERE NOT EXISTS (SELECT 1 FROM ({pe}) AS x WHERE {by_content})")
        return f"SELECT * FROM {t}"
    return f"SELECT * FROM {left}"


def _dedupe_special(con, p: Plan, export, sr: str) -> None:
    """De-duplicate the special rows held in ``sr`` (rows whose id hash is in the duplicates,
    and rows without id) into ``slow``, as the loader does: per (type, message id) the copy
    received last. Where copies tied on received_at differ in a column the plan reads, or two
    types share an id, the loader's hash of the rebuilt event decides: only those rows are read
    again and rebuilt as JSON."""
    _d, _c, hids, slow = _TEMP[:4]
    row = "struct_pack(" + ", ".join(
        f"{ident('c' + str(i))} := {ident(r[0])}"
        for i, r in enumerate(con.execute(f"DESCRIBE {sr}").fetchall()) if r[0] != "special") + ")"
    con.execute(f"""CREATE OR REPLACE TEMP TABLE {hids} AS
        SELECT message_id FROM {sr} WHERE message_id IS NOT NULL GROUP BY type, message_id, received_at
        HAVING count(*) > 1 AND count(DISTINCT {row}) > 1
        UNION SELECT message_id FROM {sr} WHERE message_id IS NOT NULL GROUP BY message_id
        HAVING count(DISTINCT type) > 1""")
    hashed = con.execute(f"SELECT DISTINCT _t FROM {sr} WHERE message_id IS NULL OR "
                         f"message_id IN (SELECT message_id FROM {hids})").fetchall()
    need = sorted(p.tables[r[0]].name for r in hashed)
    rows = [f"SELECT * EXCLUDE (special) FROM {sr} WHERE message_id IS NOT NULL AND message_id NOT IN "
            f"(SELECT message_id FROM {hids})"]
    if need:
        hsel = _slow_selects(export, p, need, hids)
        for part in _lean_selects(p, hsel, export.tables, hashed=True):
            rows.append(f"SELECT * FROM ({part}) WHERE message_id IS NULL OR message_id IN "
                        f"(SELECT message_id FROM {hids})")
    con.execute(f"""CREATE OR REPLACE TEMP TABLE {slow} AS
        SELECT * EXCLUDE (_dup) FROM (
            SELECT *, row_number() OVER (PARTITION BY type, message_id
                                         ORDER BY received_at DESC NULLS LAST, event_hash) AS _dup
            FROM ({_union(rows)}))
        WHERE _dup = 1 OR message_id IS NULL""")
