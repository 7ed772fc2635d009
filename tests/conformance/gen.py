"""Seeded generators of Segment events, mapping-kit data and FQL triggers for conformance tests.

They aim at the corners of mapping-kit and FQL: missing paths, explicit nulls, falsy parents
(null/false/0/""), keys with spaces, dots and non-ASCII, arrays, ints/floats/negatives/large
numbers, booleans. Behaviours listed in DIFFERENCES.md (JavaScript leaks) are never generated.
"""
from __future__ import annotations

import random

KEYS = ["plan", "tier", "a", "b", "Plan Name", "café", "日本", "x y", "user_property.plan", "legacy.tier",
        "emoji😀", "n", "z", "nested", "list", "say \"hi\"", "a/b", "t~x"]
STRINGS = ["", "team", "Team Pro", "pro", "PRO", "annual", "café", "ÉCOLE", "日本語", "a.b", "x,y", "$&", "50%",
           "hello world", "{\"k\": 1}", "[1,2]", "true", "12", "  ", "null", "😀 smile", "{{userId}}"]
NUMBERS = [0, 1, -1, 2, 5, 12, 42, -17, 3.5, -0.25, 0.1, 1e21, 123456789, 9007199254740991, 1.5e-7, 2.5e300,
           100000000000000000000, 1e-6, 7.0e10]


def scalar(r: random.Random):
    k = r.random()
    if k < 0.35:
        return r.choice(STRINGS)
    if k < 0.65:
        return r.choice(NUMBERS)
    if k < 0.78:
        return r.choice([True, False])
    return None


def value(r: random.Random, depth: int):
    k = r.random()
    if depth <= 0 or k < 0.55:
        return scalar(r)
    if k < 0.8:
        return {kk: (listval(r, depth - 1) if kk == "list" else value(r, depth - 1))
                for kk in r.sample(KEYS, r.randint(0, 4))}
    return [value(r, depth - 1) for _ in range(r.randint(0, 3))]


def listval(r: random.Random, depth: int) -> list:
    """Values under the key "list" are always arrays, so numeric path segments never index a
    string (a JavaScript leak, see DIFFERENCES.md)."""
    return [value(r, depth) for _ in range(r.randint(0, 3))]


def event(r: random.Random) -> dict:
    ev: dict = {"type": r.choice(["identify", "track", "page", "group", "screen", "alias"])}
    if r.random() < 0.9:
        ev["userId"] = r.choice(["u_1", "u_2001", "", None, 1011, "user é", "u_1,u_2"])
    if r.random() < 0.5:
        ev["event"] = r.choice(["Plan Changed", "Signed Up", "", "plan changed", "Extension Installed", None, "x"])
    if r.random() < 0.3:
        ev["name"] = r.choice(["Home", "Pricing", "", None])
    for field in ("properties", "traits", "context"):
        k = r.random()
        if k < 0.75:
            ev[field] = {kk: (listval(r, 3) if kk == "list" else value(r, 3)) for kk in r.sample(KEYS, r.randint(0, 7))}
        elif k < 0.85:
            ev[field] = r.choice([None, 0, "", False, "str", 5, [1, 2]])
    ev["messageId"] = f"m{r.randint(0, 10**6)}"
    return ev


# -- mapping-kit -------------------------------------------------------------------------------

SEGS = [k for k in KEYS if "." not in k]


def path(r: random.Random) -> str:
    k = r.random()
    if k < 0.05:
        return "$."
    root = r.choice(["properties", "traits", "context", "userId", "event", "type", "name", "missing", "messageId"])
    parts = [root]
    if root in ("properties", "traits", "context"):
        for _ in range(r.randint(0, 3)):
            parts.append(r.choice(SEGS))
            if parts[-1] == "list" and r.random() < 0.6:
                parts.append(r.choice(["0", "1", "2"]))
    if r.random() < 0.1:
        parts.append("legacy.tier")  # unreachable dotted key
    text = "$." + ".".join(parts)
    if r.random() < 0.1 and len(parts) > 1:  # bracket forms
        text = "$." + parts[0] + "".join(f'["{p}"]' if not p.isdigit() else f"[{p}]" for p in parts[1:])
    return text


def tpl_path(r: random.Random) -> str:
    return path(r)[2:] or " "


def mapping(r: random.Random, depth: int, counts: dict):
    """A random mapping-kit value; ``counts`` tallies directives used."""
    if depth <= 0 or r.random() < 0.15:
        k = r.random()
        if k < 0.7:
            counts["@path"] = counts.get("@path", 0) + 1
            return {"@path": path(r)}
        return scalar(r)
    d = r.choice(["@path", "@template", "@literal", "@if", "@case", "@replace", "@json", "@flatten",
                  "@merge", "@arrayPath", "@transform", "@excludeWhenNull", "object", "array"])
    counts[d] = counts.get(d, 0) + 1
    sub = lambda: mapping(r, depth - 1, counts)  # noqa: E731
    if d == "@path":
        return {"@path": path(r)}
    if d == "@template":
        pieces = [r.choice(["", "id:", " - ", "é", "{", "}"]) for _ in range(3)]
        t = pieces[0] + "{{" + r.choice(["", " "]) + tpl_path(r) + "}}" + pieces[1]
        if r.random() < 0.5:
            t += "{{" + tpl_path(r) + "}}"
        if r.random() < 0.1:
            t += "{{{" + tpl_path(r) + "}}}"
        return {"@template": t + pieces[2]}
    if d == "@literal":
        return {"@literal": r.choice([scalar(r), value(r, 2), sub()])}
    if d == "@if":
        o: dict = {}
        key = r.choice(["exists", "blank", "exists"])
        o[key] = sub()
        if r.random() < 0.8:
            o["then"] = sub()
        if r.random() < 0.7:
            o["else"] = r.choice([sub(), scalar(r)])
        return {"@if": o}
    if d == "@case":
        return {"@case": {"operator": r.choice(["lower", "upper"]), "value": {"@path": path(r)}}}
    if d == "@replace":
        o = {"pattern": r.choice(["a", "an", "e", "A", " ", ".", "$", "é", "1", "pro", "[", "*"]),
             "value": r.choice([{"@path": path(r)}, sub() if isinstance(sub(), dict) else {"@path": path(r)}])}
        if r.random() < 0.7:
            o["replacement"] = r.choice(["", "_", "X", "$&$&", "$$", "[$&]", "é", "\\", "$1"])
        if r.random() < 0.4:
            o["ignorecase"] = r.choice([True, False])
        if r.random() < 0.4:
            o["global"] = r.choice([True, False])
        if r.random() < 0.2:
            o["pattern2"] = r.choice(["b", "_", "X"])
            o["replacement2"] = r.choice(["", "-"])
        if not isinstance(o["value"], dict):
            o["value"] = {"@path": path(r)}
        return {"@replace": o}
    if d == "@json":
        return {"@json": {"mode": r.choice(["encode", "decode"]), "value": {"@path": path(r)} if r.random() < 0.7 else sub()}}
    if d == "@flatten":
        o = {"separator": r.choice([".", "_", "/"]), "value": {"@path": path(r)}}
        if r.random() < 0.3:
            o["omitArrays"] = True
        return {"@flatten": o}
    if d == "@merge":
        objs = [r.choice([{"@path": r.choice(["$.properties", "$.traits", "$.context", "$.missing"])},
                          {"k": sub()}]) for _ in range(r.randint(1, 3))]
        return {"@merge": {"direction": r.choice(["left", "right"]), "objects": objs}}
    if d == "@arrayPath":
        shape = r.choice([{"v": {"@path": "$." + r.choice(SEGS)}, "all": {"@path": "$."}},
                          {"@path": "$." + r.choice(SEGS)}, {}, {"t": {"@template": "{{" + r.choice(SEGS) + "}}"}}])
        return {"@arrayPath": [path(r), shape]}
    if d == "@transform":
        return {"@transform": {"apply": {"p": {"@path": path(r)}, "q": sub()}, "mapping": {"out": {"@path": "$.p"}, "qq": {"@path": "$.q"}}}}
    if d == "@excludeWhenNull":
        return {"@excludeWhenNull": r.choice([{"@path": path(r)}, {"a": {"@path": path(r)}, "b": None}, sub()])}
    if d == "object":
        return {k: sub() for k in r.sample(["userId", "user_property.plan", "traits", "a b", "é", "x"], r.randint(1, 3))}
    return [sub() for _ in range(r.randint(0, 3))]


def data_mapping(r: random.Random, counts: dict):
    if r.random() < 0.1:
        return mapping(r, 3, counts)  # a top-level directive
    return {k: mapping(r, 3, counts) for k in r.sample(["userId", "user_property.plan", "traits", "user_property_event", "a.b", "日本"], r.randint(1, 4))}


# -- FQL ---------------------------------------------------------------------------------------

FIELDS = ["type", "event", "name", "userId", "properties.plan", "properties.n", "properties.z", "traits.plan",
          "traits.nested.a", "context.tier", "properties.list.0", "traits.b", "properties.a", "context.x\\ y"]
LITS = ['"identify"', '"track"', '"Plan Changed"', '"team"', '""', "5", "0", "-1", "3.5", "12", "true", "false",
        "null", "identify", "'team'", '"pro"', "42", "1000000000000000000000", '"5"']


def condition(r: random.Random, counts: dict) -> str:
    f = r.choice(FIELDS)
    k = r.random()
    if k < 0.6:
        op = r.choice(["=", "!=", "=", "!=", "<", ">", "<=", ">="])
        lit = r.choice(LITS)
        counts[op] = counts.get(op, 0) + 1
        return f"{f} {op} {lit}"
    if k < 0.75:
        op = r.choice(["exists", "not exists"])
        counts[op] = counts.get(op, 0) + 1
        return f"{f} {'!=' if op == 'exists' else '='} null"
    fn = r.choice(["contains", "match"])
    neg = r.random() < 0.3
    counts[("!" if neg else "") + fn] = counts.get(("!" if neg else "") + fn, 0) + 1
    if fn == "contains":
        arg = r.choice(['"a"', '"Plan"', '"é"', '""', '"team"'])
    else:
        arg = r.choice(['"Plan*"', '"*ed"', '"t*"', '"*"', '"*m"'])
    f2 = r.choice(["event", "name", "userId", "properties.plan", "traits.plan", "context.tier"])
    return f"{'!' if neg else ''}{fn}({f2}, {arg})"


def trigger(r: random.Random, counts: dict) -> str:
    k = r.random()
    if k < 0.03:  # quirks: negated group, nested parens, junk
        return r.choice(['!(type = "identify")', '((type = "track"))', 'type = "x" and ()', 'type', 'type =',
                         'properties.n >=5', 'type = "identify" or', "(type = 'track')", 'userId != 5'])
    n = r.randint(1, 4)
    parts = []
    for _ in range(n):
        c = condition(r, counts)
        if r.random() < 0.2:
            c = f"({c} {r.choice(['and', 'or'])} {condition(r, counts)})"
            counts["()"] = counts.get("()", 0) + 1
        parts.append(c)
    out = parts[0]
    for p in parts[1:]:
        conj = r.choice(["and", "or"])
        counts[conj] = counts.get(conj, 0) + 1
        out += f" {conj} {p}"
    return out
