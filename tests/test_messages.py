"""Tests of cmdseg_nb._messages (with _layout and _preparer): frame -> validated, serialized Segment messages."""
from __future__ import annotations

import datetime as dt
import decimal
import json
import re
import warnings

import numpy as np
import orjson
import pandas as pd
import pyarrow as pa
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cmdseg_nb._errors import CmdsegWarning, MessageError
from cmdseg_nb._layout import MAX_MESSAGE_BYTES
from cmdseg_nb._messages import identify_frame, prepare, track_frame


def strict_loads(body: bytes):
    """json.loads that refuses NaN/Infinity, as a strict JSON parser does."""

    def refuse(name):
        raise ValueError(f"invalid JSON constant {name}")

    return json.loads(body, parse_constant=refuse)


def messages(prepared):
    return [strict_loads(b) for b in prepared.bodies]


# -- B14: every numpy / pandas / Decimal / date value ----------------------------------------
B14_EXPECTED = {
    "amount": 19.99,
    "qty": 3,
    "ratio": 0.25,
    "paid_on": "2024-03-10",
    "tags": ["a", "b"],
    "meta": {"tier": 2},
}


def b14_frame(flavour: str):
    row = {
        "user_id": "u_1012",
        "event": "Invoice Paid",
        "amount": decimal.Decimal("19.99"),
        "qty": np.int64(3),
        "ratio": np.float32(0.25),
        "paid_on": dt.date(2024, 3, 10),
        "tags": np.array(["a", "b"]),
        "meta": {"tier": np.int64(2)},
        "raw": b"\x00\x01",
    }
    if flavour == "pandas-object":
        return pd.DataFrame([row])
    table = pa.table(
        {
            "user_id": pa.array(["u_1012"]),
            "event": pa.array(["Invoice Paid"]),
            "amount": pa.array([decimal.Decimal("19.99")], pa.decimal128(10, 2)),
            "qty": pa.array([3], pa.int64()),
            "ratio": pa.array([0.25], pa.float32()),
            "paid_on": pa.array([dt.date(2024, 3, 10)], pa.date32()),
            "tags": pa.array([["a", "b"]], pa.list_(pa.string())),
            "meta": pa.array([{"tier": 2}]),
            "raw": pa.array([b"\x00\x01"], pa.binary()),
        }
    )
    if flavour == "arrow-table":
        return table
    if flavour == "pandas-arrow":
        return table.to_pandas(types_mapper=pd.ArrowDtype)
    if flavour == "pandas-numpy":
        df = table.to_pandas()
        df["ratio"] = df["ratio"].astype(np.float32)
        return df
    raise AssertionError(flavour)


FLAVOURS = ["pandas-object", "pandas-numpy", "pandas-arrow", "arrow-table"]


@pytest.mark.parametrize("flavour", FLAVOURS)
def test_b14_bytes_column_is_a_row_error_naming_the_column(flavour):
    p = prepare(b14_frame(flavour))
    assert p.bodies == []
    [err] = p.errors
    assert (err.row, err.column) == (0, "raw")
    assert "b'" not in str(err)


@pytest.mark.parametrize("flavour", FLAVOURS)
def test_b14_values_from_frames_serialize_exactly(flavour):
    df = b14_frame(flavour)
    df = df.drop("raw") if isinstance(df, pa.Table) else df.drop(columns="raw")
    p = prepare(df)
    assert p.errors == []
    [body] = p.bodies
    [msg] = messages(p)
    assert msg["properties"] == B14_EXPECTED
    assert msg["type"] == "track" and msg["userId"] == "u_1012"
    # written from the decimal's digits, never through a binary float
    assert b'"amount":19.99,' in body


def test_b14_bytes_as_base64_when_asked():
    [msg] = messages(prepare(b14_frame("pandas-object"), binary="base64"))
    assert msg["properties"]["raw"] == "AAE="


@pytest.mark.parametrize(
    ("value", "json_text"),
    [
        (np.int8(-5), b"-5"),
        (np.uint64(2**64 - 1), b"18446744073709551615"),
        (2**80, b"1208925819614629174706176"),
        (-(2**70), b"-1180591620717411303424"),
        (np.float16(0.1), b"0.1"),
        (np.float32(0.1), b"0.1"),
        (np.float64(0.1), b"0.1"),
        (np.bool_(True), b"true"),
        (decimal.Decimal("0.10"), b"0.10"),
        (decimal.Decimal("123456789012345678901234567890.123456789"),
         b"123456789012345678901234567890.123456789"),
        (decimal.Decimal("1E+2"), b"1E+2"),
        (decimal.Decimal("-1E-7"), b"-1E-7"),
        (np.str_("x"), b'"x"'),
        (pd.Timestamp("2024-03-10 10:00:00.5", tz="Europe/Paris"), b'"2024-03-10T09:00:00.500Z"'),
        (pd.Timestamp("2024-03-10 09:00:00.000001", tz="UTC"), b'"2024-03-10T09:00:00.000001Z"'),
        (pd.Timestamp("2024-03-10 09:00:00.000000001", tz="UTC"),
         b'"2024-03-10T09:00:00.000000001Z"'),
        (dt.datetime(2024, 3, 10, 9, tzinfo=dt.timezone(dt.timedelta(hours=-5))),
         b'"2024-03-10T14:00:00.000Z"'),
        (dt.date(2024, 1, 2), b'"2024-01-02"'),
        ((1, np.int32(2)), b"[1,2]"),
        (np.array([1.5, np.nan]), b"[1.5,null]"),
        ({"a": {"b": [np.int16(1), {"c": np.float32(0.5)}]}}, b'{"a":{"b":[1,{"c":0.5}]}}'),
        ({"keep": None, "drop": float("nan"), "na": pd.NA}, b'{"keep":null}'),
    ],
)
def test_b14_whole_kind_of_values(value, json_text):
    df = pd.DataFrame({"user_id": ["u1"], "event": ["E"], "v": pd.Series([value], dtype=object)})
    [body] = prepare(df).bodies
    assert b'"v":' + json_text in body
    strict_loads(body)


@pytest.mark.parametrize(
    "series",
    [
        pd.array([7, None], dtype="Int64"),
        pd.array([7, None], dtype="UInt8"),
        pd.array([7, None], dtype=pd.ArrowDtype(pa.int64())),
        pd.array([7.0, None], dtype="Float64"),
    ],
)
def test_nullable_numbers_send_value_and_leave_out_missing(series):
    df = pd.DataFrame({"user_id": ["u1", "u2"], "event": ["E", "E"], "n": series})
    msgs = messages(prepare(df))
    assert msgs[0]["properties"] == {"n": 7}
    assert "properties" not in msgs[1]


def test_timedelta_is_a_row_error():
    df = pd.DataFrame({"user_id": ["u1"], "event": ["E"], "d": [pd.Timedelta("1s")]})
    [err] = prepare(df).errors
    assert err.column == "d" and "total_seconds" in str(err)


# -- B15: NaN / inf / None / NaT ---------------------------------------------------------------
def b15_frame():
    return pd.DataFrame(
        {
            "user_id": ["u_1013", "u_1014"],
            "event": ["Cart Viewed", "Cart Viewed"],
            "amount": [float("nan"), 12.5],
            "discount": [float("inf"), 0.0],
            "coupon": pd.Series([None, "SPRING"], dtype=object),
            "seen_at": pd.to_datetime([None, "2024-03-10T09:00:00Z"], utc=True),
        }
    )


def test_b15_missing_values_left_out_and_inf_warned_with_row():
    with pytest.warns(CmdsegWarning, match=r"infinite.*discount.*row\(s\) 0"):
        p = prepare(b15_frame())
    row0, row1 = messages(p)
    assert row0.get("properties", {}) == {}
    assert row1["properties"] == {
        "amount": 12.5,
        "discount": 0.0,
        "coupon": "SPRING",
        "seen_at": "2024-03-10T09:00:00.000Z",
    }
    assert all(b"NaN" not in b and b"Infinity" not in b and b"null" not in b for b in p.bodies)


@settings(max_examples=150, deadline=None)
@given(
    st.lists(
        st.dictionaries(
            st.text(min_size=1, max_size=5),
            st.recursive(
                st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=5)
                | st.decimals(),
                lambda inner: st.lists(inner, max_size=3)
                | st.dictionaries(st.text(max_size=3), inner, max_size=3),
                max_leaves=8,
            ),
            max_size=4,
        ),
        min_size=1,
        max_size=4,
    )
)
def test_bodies_are_always_strict_json(props):
    df = pd.DataFrame(
        {
            "user_id": [f"u{i}" for i in range(len(props))],
            "event": ["E"] * len(props),
            "properties": pd.Series(props, dtype=object),
        }
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", CmdsegWarning)
        p = prepare(df)
    assert len(p.bodies) + len(p.errors) == len(props)
    for body in p.bodies:
        msg = strict_loads(body)
        assert msg["userId"].startswith("u")


def test_naive_datetimes_warn_once_per_send():
    df = pd.DataFrame(
        {
            "user_id": ["u1", "u2"],
            "event": ["E", "E"],
            "timestamp": pd.to_datetime(["2024-03-10 09:00", "2024-03-11 09:00"]),
            "at": pd.to_datetime(["2024-01-01", "2024-01-02"]),
        }
    )
    with pytest.warns(CmdsegWarning) as record:
        p = prepare(df)
    assert len(record) == 1 and "4 datetime value(s)" in str(record[0].message)
    assert messages(p)[0]["timestamp"] == "2024-03-10T09:00:00.000Z"


def test_naive_datetimes_with_tz_argument_do_not_warn():
    df = pd.DataFrame(
        {"user_id": ["u1"], "event": ["E"], "timestamp": pd.to_datetime(["2024-03-10 10:00"])}
    )
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        p = prepare(df, tz="Europe/Paris")
    assert messages(p)[0]["timestamp"] == "2024-03-10T09:00:00.000Z"


# -- validation per row --------------------------------------------------------------------
def test_bad_rows_are_reported_and_good_rows_still_go():
    df = pd.DataFrame(
        {
            "type": ["track", "track", "group", "alias", "identify", "frobnicate", "identify", "page"],
            "userId": ["u1", "u2", "u3", "u4", "  ", "u6", None, "u8"],
            "anonymousId": [None, None, None, None, None, None, None, "a8"],
            "event": ["E", None, None, None, None, None, None, None],
            "groupId": [None, None, None, None, None, None, None, None],
            "previousId": [None, None, None, None, None, None, None, None],
        },
        dtype=object,
    )
    p = prepare(df)
    assert p.rows == [0, 7]
    got = {e.row: (e.column, e.reason) for e in p.errors}
    assert got[1][0] == "event" and "track" in got[1][1]
    assert got[2][0] == "groupId"
    assert got[3][0] == "previousId"
    assert got[4][0] == "userId" and "anonymousId" in got[4][1]
    assert got[5][0] == "type"
    assert got[6][0] == "userId"
    assert all(isinstance(e, MessageError) for e in p.errors)


def test_float_user_id_is_rejected_not_written_as_1012_0():
    df = pd.DataFrame({"user_id": [1012.0], "event": ["E"]})
    [err] = prepare(df).errors
    assert err.column == "user_id" and "Int64" in err.reason


def test_integer_user_ids_become_text():
    df = pd.DataFrame({"user_id": [1012], "event": ["E"]})
    assert messages(prepare(df))[0]["userId"] == "1012"


def test_message_over_32_kb_is_rejected_with_size():
    df = pd.DataFrame({"user_id": ["u1", "u2"], "event": ["E", "E"], "blob": ["x" * 40_000, "y"]})
    p = prepare(df)
    [err] = p.errors
    assert err.row == 0 and err.column == "properties"
    size = int(re.search(r"([\d,]+) bytes", err.reason).group(1).replace(",", ""))
    assert size > MAX_MESSAGE_BYTES
    assert p.rows == [1]


def test_snake_case_columns_and_extras_go_to_traits_for_identify():
    df = pd.DataFrame(
        {"type": ["identify"], "user_id": ["u1"], "anonymous_id": ["a1"], "plan": ["pro"],
         "message_id": ["m-1"]}
    )
    [msg] = messages(prepare(df))
    assert msg["userId"] == "u1" and msg["anonymousId"] == "a1"
    assert msg["traits"] == {"plan": "pro"} and msg["messageId"] == "m-1"
    assert msg["context"]["library"]["name"] == "cmdseg_nb"


def test_column_under_two_spellings_is_an_error():
    df = pd.DataFrame({"userId": ["u1"], "user_id": ["u1"], "event": ["E"]})
    with pytest.raises(MessageError, match="keep one"):
        prepare(df)


def test_no_type_and_no_event_column_is_an_error():
    with pytest.raises(MessageError) as info:
        prepare(pd.DataFrame({"user_id": ["u1"], "plan": ["x"]}))
    assert info.value.column == "type"


def test_sent_at_column_is_ignored_with_warning():
    df = pd.DataFrame({"user_id": ["u1"], "event": ["E"], "sent_at": ["2020-01-01T00:00:00Z"]})
    with pytest.warns(CmdsegWarning, match="sent_at"):
        [msg] = messages(prepare(df))
    assert "sent_at" not in msg.get("properties", {}) and "sentAt" not in msg


def test_properties_column_json_text_and_dict_merge_with_extras():
    df = pd.DataFrame(
        {"user_id": ["u1", "u2"], "event": ["E", "E"],
         "properties": ['{"a": 1, "b": 2}', {"a": 5}], "b": [9, None]}
    )
    m1, m2 = messages(prepare(df))
    assert m1["properties"] == {"a": 1, "b": 9}
    assert m2["properties"] == {"a": 5}


# -- messageIds (B21) ----------------------------------------------------------------------------
def b21_frame():
    ids = [f"m-{i}" for i in range(50)]
    ids[7] = ids[8] = "m-dup"
    return pd.DataFrame(
        {"user_id": [f"u{i}" for i in range(50)], "event": ["E"] * 50, "message_id": ids,
         "n": range(50)}
    )


def test_b21_caller_message_ids_kept_and_duplicates_flagged():
    p = prepare(b21_frame())
    assert sorted((e.row, e.column) for e in p.errors) == [(7, "message_id"), (8, "message_id")]
    assert "m-dup" in p.errors[0].reason
    assert p.message_ids == [f"m-{i}" for i in range(50) if i not in (7, 8)]
    assert [m["messageId"] for m in messages(p)] == p.message_ids


def test_b21_duplicates_allowed_on_request():
    p = prepare(b21_frame(), allow_duplicate_message_ids=True)
    assert p.errors == [] and p.message_ids.count("m-dup") == 2


def test_derived_message_ids_are_deterministic_and_distinct():
    df = pd.DataFrame({"user_id": ["u1", "u1", "u2"], "event": ["E", "E", "E"]})
    a, b = prepare(df), prepare(df.copy())
    assert a.message_ids == b.message_ids and a.bodies == b.bodies
    assert len(set(a.message_ids)) == 3  # identical rows are not merged
    assert all(len(i) < 100 for i in a.message_ids)
    c = prepare(df, run_name="second run")
    assert set(c.message_ids).isdisjoint(a.message_ids)


def test_input_frame_is_not_mutated():
    df = b15_frame()
    before = df.copy()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", CmdsegWarning)
        prepare(df)
    pd.testing.assert_frame_equal(df, before)


# -- identify_frame / track_frame ----------------------------------------------------------------
def test_identify_frame_null_versus_missing():
    idx = ["a", "b", "c"]
    wide = pd.DataFrame(
        {
            "user_id": pd.Series(["u1", "u2", None], index=idx, dtype=object),
            "plan": pd.Series([None, "pro", "x"], index=idx, dtype=object),
            "seats": pd.Series([pd.NA, 3, 1], index=idx, dtype=object),
            "score": pd.Series([float("nan"), 0.5, 1.0], index=idx),
            "tags": pd.Series([["a"], np.nan, []], index=idx, dtype=object),
        }
    )
    out = identify_frame(wide)
    assert list(out.columns) == ["type", "userId", "traits"]
    assert list(out.index) == ["a", "b", "c"]
    assert out.loc["a", "traits"] == {"plan": None, "tags": ["a"]}
    assert out.loc["b", "traits"] == {"plan": "pro", "seats": 3, "score": 0.5}
    p = prepare(out)
    assert b'"traits":{"plan":null,"tags":["a"]}' in p.bodies[0]
    [err] = p.errors
    assert err.row == 2  # no user id: reported, not dropped


def test_identify_frame_needs_user_id_column():
    with pytest.raises(MessageError):
        identify_frame(pd.DataFrame({"id": ["u1"]}))


def test_track_frame():
    df = pd.DataFrame(
        {"user_id": ["u1"], "amount": [decimal.Decimal("1.10")], "note": [None],
         "at": pd.to_datetime(["2024-03-10T09:00:00Z"], utc=True)}
    )
    out = track_frame(df, event="Invoice Paid", timestamp_column="at")
    [msg] = messages(prepare(out))
    assert msg["event"] == "Invoice Paid" and msg["properties"] == {"amount": 1.1}
    assert b'"amount":1.10' in prepare(out).bodies[0]
    assert msg["timestamp"] == "2024-03-10T09:00:00.000Z"
    assert list(out.index) == list(df.index)


@pytest.mark.parametrize("flavour", FLAVOURS)
def test_b14_case_expected_values(flavour):
    from conftest import load_case

    expected = load_case("B14")["expected"]
    df = b14_frame(flavour)
    [err] = prepare(df).errors  # the bytes column: a row error naming it, never "b'...'"
    assert err.column == "raw"
    [msg] = messages(prepare(df, binary="base64"))
    assert {k: v for k, v in msg["properties"].items() if k != "raw"} == expected["properties"]
    assert msg["properties"]["raw"] == "AAE="


def test_derived_ids_match_the_public_derivation():
    from cmdseg_nb._serialize import derive_message_id

    df = pd.DataFrame({"user_id": ["u1", "u1"], "event": ["E", "E"]})
    p = prepare(df, library=False)
    canonical = orjson.dumps({"event": "E", "type": "track", "userId": "u1"},
                             option=orjson.OPT_SORT_KEYS)
    assert p.message_ids[0] == derive_message_id(canonical)
    assert p.message_ids[1] == derive_message_id(canonical, occurrence=1)


# -- the column-wise fast path makes the same bytes as the general path -------------------------
def prepare_both(df, **kw):
    from cmdseg_nb import _preparer as m

    fast = prepare(df, **kw)
    original = m.Preparer.__init__

    def slow_init(self, *a, **k):
        original(self, *a, **k)
        self.fast = False

    m.Preparer.__init__ = slow_init
    try:
        slow = prepare(df, **kw)
    finally:
        m.Preparer.__init__ = original
    return fast, slow


text = st.text(alphabet=st.characters(blacklist_categories=("Cs",)), max_size=6)


@settings(max_examples=120, deadline=None)
@given(
    data=st.lists(
        st.tuples(
            st.one_of(st.none(), text), st.one_of(st.none(), text), text,
            st.one_of(st.none(), st.floats(allow_infinity=False)),
            st.one_of(st.none(), st.integers(-(2**70), 2**70)),
            st.one_of(st.none(), st.booleans()), st.one_of(st.none(), text),
            st.one_of(st.none(), st.datetimes(timezones=st.just(dt.timezone.utc))),
        ),
        min_size=1, max_size=6,
    ),
    names=st.permutations(["amount", "b", "Zeta", "é", "n"]),
)
def test_fast_path_bytes_equal_general_path(data, names):
    cols = list(zip(*data))
    df = pd.DataFrame(
        {"user_id": pd.Series(cols[0], dtype=object), "anonymous_id": pd.Series(cols[1], dtype=object),
         "event": pd.Series(cols[2], dtype=object),
         names[0]: pd.Series(cols[3], dtype=object), names[1]: pd.Series(cols[4], dtype=object),
         names[2]: pd.Series(cols[5], dtype=object), names[3]: pd.Series(cols[6], dtype=object),
         "timestamp": pd.Series(cols[7], dtype=object), names[4]: [1.5] * len(data)}
    )
    fast, slow = prepare_both(df)
    assert fast.bodies == slow.bodies and fast.message_ids == slow.message_ids
    assert [(e.row, e.column) for e in fast.errors] == [(e.row, e.column) for e in slow.errors]


def test_fast_path_is_taken_for_plain_tracks(monkeypatch):
    from cmdseg_nb import _preparer as m

    calls = []
    real = m.track_canonicals

    def spy(*a):
        out = real(*a)
        calls.append(out is not None)
        return out

    monkeypatch.setattr(m, "track_canonicals", spy)
    df = pd.DataFrame({"user_id": ["u1", "u1", "u2"], "event": ["E", "E", "F"],
                       "a": [1.0, 3.0, 2.5], "b": ['q"uote', "ü", None],
                       "c": [None, 7, 2**70]})
    fast, slow = prepare_both(df)
    assert calls[0] is True
    assert fast.bodies == slow.bodies and len(set(fast.message_ids)) == 3


def test_dotted_columns_nest_into_their_object_field():
    """Columns as pandas.json_normalize writes them nest back (properties.price -> properties)."""
    import orjson
    df = pd.DataFrame({"userId": ["u1", "u2"], "event": ["E", "E"],
                       "properties.price": [1.5, np.nan], "context.page.url": ["/a", None],
                       "properties": [{"sku": "x"}, None], "plain": [1, 2]})
    bodies = [orjson.loads(b) for b in prepare(df).bodies]
    assert bodies[0]["properties"] == {"sku": "x", "price": 1.5, "plain": 1}
    assert bodies[1]["properties"] == {"plain": 2}  # NaN cell left out, like any missing cell
    assert bodies[0]["context"]["page"] == {"url": "/a"}
    assert "page" not in bodies[1]["context"]
    assert not any("." in k for b in bodies for k in b["properties"])
