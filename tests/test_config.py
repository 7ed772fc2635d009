"""MappingConfig: Segment's shape, limits and validation errors naming mapping and JSON path."""
from __future__ import annotations

import json

import pytest

from cmdseg_nb._config import Mapping, MappingConfig
from cmdseg_nb._errors import MappingError


def test_default_is_identify_whole_event():
    cfg = MappingConfig.default()
    assert cfg.to_dict() == [{"name": "Identify traits", "trigger": 'type = "identify"', "data": {"@path": "$."}}]
    assert isinstance(cfg.mappings[0], Mapping)
    assert "Identify traits" in repr(cfg) and "<table" in cfg._repr_html_()


def test_data_defaults_and_roundtrip(tmp_path):
    cfg = MappingConfig.from_dict([{"name": "a", "trigger": 'type = "track"'}])
    assert cfg.mappings[0].data == {"@path": "$."}
    p = tmp_path / "m.json"
    p.write_text(cfg.to_json())
    assert MappingConfig.from_json(p) == cfg
    assert MappingConfig.from_json(cfg.to_json()) == cfg
    assert MappingConfig.from_dict({"mappings": cfg.to_dict()}) == cfg


def test_inputs_not_shared():
    data = {"x": {"@path": "$.userId"}}
    cfg = MappingConfig.from_dict([{"name": "a", "trigger": "type = identify", "data": data}])
    data["x"] = 1
    assert cfg.mappings[0].data == {"x": {"@path": "$.userId"}}


@pytest.mark.parametrize(("obj", "mapping", "path"), [
    ([{"name": f"m{i}", "trigger": "type = identify"} for i in range(6)], None, "$"),
    ([{"name": "a", "trigger": "type = identify"}, {"name": "a", "trigger": "type = track"}], "a", "$[1].name"),
    ([{"name": "", "trigger": "type = identify"}], None, "$[0].name"),
    ([{"name": "a", "trigger": "type ="}, ], None, None),
    ([{"name": "a", "trigger": "type = \"x\" and ()"}], "a", "$[0].trigger"),
    ([{"name": "a", "trigger": 5}], "a", "$[0].trigger"),
    ([{"name": "a", "trigger": "type = identify", "data": {"k": {"@nope": 1}}}], "a", "$[0].data.k"),
    ([{"name": "b", "trigger": "type = identify", "data": {"k": {"@replace": {"pattern": "x" * 11, "value": "v"}}}}],
     "b", '$[0].data.k["@replace"].pattern'),
    ([{"name": "a", "trigger": "type = identify", "extra": 1}], "a", "$[0]"),
    ("nope", None, "$"),
])
def test_errors_name_mapping_and_path(obj, mapping, path):
    if path is None:  # `type =` parses in Segment (compares type with "eos"): accepted
        MappingConfig.from_dict(obj)
        return
    with pytest.raises(MappingError) as e:
        MappingConfig.from_dict(obj)
    assert e.value.mapping == mapping
    assert e.value.path == path


def test_bad_json_text():
    with pytest.raises(MappingError, match="not valid JSON"):
        MappingConfig.from_json("[{")
    assert json.loads(MappingConfig.default().to_json())


def test_directives_inside_arrays_are_validated_like_anywhere_else():
    import cmdseg_nb as cs
    bad = {"userId": {"@path": "$.userId"}, "user_property.a": [1, {"@template": 5}]}
    with pytest.raises(cs.MappingError) as info:
        cs.MappingConfig.from_dict([{"name": "m", "trigger": 'type = "track"', "data": bad}])
    assert info.value.path == '$[0].data["user_property.a"][1]["@template"]'
    assert info.value.mapping == "m"


def test_each_problem_is_listed_once():
    import cmdseg_nb as cs
    with pytest.raises(cs.MappingError) as info:
        cs.MappingConfig.from_dict([{"name": "m", "trigger": 'type = "x"',
                                     "data": {"x": {"@pathh": "$.a"}}}])
    assert info.value.problems == [("$[0].data.x", "has an invalid directive: @pathh")]
    assert "more problem" not in str(info.value)
