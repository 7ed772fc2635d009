"""The demo (what `make demo` runs) end to end, on the bundled data and a mapping file."""
from __future__ import annotations

from pathlib import Path

import pandas as pd

from cmdseg_nb.cli import main

DATA = Path(__file__).resolve().parent.parent / "data"


def test_demo_default_mapping_round_trip(tmp_path, capsys):
    out = tmp_path / "props.parquet"
    assert main(["demo", "--out", str(out)]) == 0
    text = capsys.readouterr().out
    assert "users: 33   properties: 6   rows: 198" in text
    assert "lost: 0  extra: 0  different: 0" in text
    assert "OK: the round trip through LocalSegment matches, 0 lost" in text
    long = pd.read_parquet(out)
    assert len(long) == 198 and long["user_id"].nunique() == 33


def test_demo_with_example_mapping_file(tmp_path, capsys):
    out = tmp_path / "props.parquet"
    assert main(["demo", "--mapping", str(DATA / "example_mapping.json"), "--out", str(out)]) == 0
    text = capsys.readouterr().out
    assert "skipped: no_user_id 109" in text
    long = pd.read_parquet(out)
    assert {"traits", "user_property", "user_property_event"} == set(long["rule"])
    assert "OK: the round trip" in text


def test_demo_bad_mapping_exits_2_naming_the_problem(tmp_path, capsys):
    bad = tmp_path / "bad.json"
    bad.write_text('[{"name": "m", "trigger": "type = \\"identify\\"", "data": {"x": {"@nope": 1}}}]')
    assert main(["demo", "--mapping", str(bad), "--out", str(tmp_path / "o.parquet")]) == 2
    err = capsys.readouterr().err
    assert "@nope" in err and "'m'" in err


def test_demo_missing_data_folder_exits_2(tmp_path, capsys):
    assert main(["demo", "--data", str(tmp_path / "missing"), "--out", str(tmp_path / "o.parquet")]) == 2
    assert "no such file" in capsys.readouterr().err
