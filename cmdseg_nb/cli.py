"""Command line: ``python -m cmdseg_nb demo`` (what ``make demo`` runs).

The demo is the whole path on the bundled export: load -> mapping -> user-property table
(Parquet) -> one identify per user sent to a local Segment endpoint -> the receiver rules
applied to what the endpoint received must give exactly the same properties.
Exit status: 0 when the round trip matches with nothing lost, 1 otherwise, 2 on bad usage.
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

__all__ = ["main"]

_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_DATA = _ROOT / "data" / "rudderstack_tutorial"
DEMO_KEY = "wk_DEMO_local_0123456789"  # a key for the local endpoint only


def _parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="cmdseg-nb", description=__doc__.splitlines()[0])
    sub = ap.add_subparsers(dest="command", required=True)
    demo = sub.add_parser("demo", help="backfill the bundled export and round-trip it through a local Segment")
    demo.add_argument("--data", default=str(DEFAULT_DATA), help="export folder or files (default: bundled rudderstack_tutorial)")
    demo.add_argument("--mapping", default=None, help="mapping configuration JSON file (default: the recommended identify mapping)")
    demo.add_argument("--out", default="out/user_properties.parquet", help="Parquet file for the long property table")
    return ap


def _say(msg: str = "") -> None:
    print(msg, flush=True)


def demo(data: str, mapping: str | None, out: str) -> int:
    import pandas as pd

    from . import identify_frame, load_export, send, to_wide, user_properties
    from ._config import MappingConfig
    from .testing import LocalSegment

    config = MappingConfig.from_json(mapping) if mapping else MappingConfig.default()
    _say(f"== cmdseg_nb demo: {data}")
    _say(f"mapping: {'default (recommended identify setup)' if mapping is None else mapping} "
         f"- {len(config.mappings)} mapping(s): " + ", ".join(
             f"{m.name!r} [{m.trigger}]" for m in config.mappings))
    export = load_export(data)
    _say("\n-- load report")
    _say(str(export.report))

    long = user_properties(export, config)
    users = long["user_id"].nunique()
    _say("\n-- user properties")
    _say(f"received objects (events x matching mappings): {long.attrs['objects']:,}")
    _say(f"users: {users:,}   properties: {long['property'].nunique():,}   rows: {len(long):,}")
    per_prop = long.groupby("property").agg(users=("user_id", "nunique"),
                                             types=("value_type", lambda s: ",".join(sorted(set(s)))))
    for prop, row in per_prop.iterrows():
        _say(f"  {prop:<32} {row['users']:>6} users  {row['types']}")
    skipped = {k: v for k, v in long.attrs["skipped"].items() if v}
    _say("skipped: " + (", ".join(f"{k} {v:,}" for k, v in skipped.items()) or "none"))
    out_path = Path(out)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    long.to_parquet(out_path, index=False)
    _say(f"wrote {out_path} ({out_path.stat().st_size:,} bytes)")

    wide = to_wide(long)
    messages = identify_frame(wide)
    _say(f"\n-- sending {len(messages):,} identify calls to a local Segment endpoint")
    with LocalSegment(DEMO_KEY) as seg:
        result = send(messages, write_key=DEMO_KEY, endpoint=seg.url, progress=False)
        received = list(seg.messages)
    _say(str(result))

    # Round trip: apply the receiver rules (default mapping) to what the endpoint received.
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "received.ndjson"
        path.write_text("".join(json.dumps(m) + "\n" for m in received), encoding="utf-8")
        back = user_properties(load_export(path))

    def table(df: pd.DataFrame) -> dict[tuple[str, str], object]:
        return {(u, p): json.loads(v) for u, p, v in zip(df["user_id"], df["property"], df["value"])}

    sent_t, back_t = table(long), table(back)
    lost = sorted(set(sent_t) - set(back_t))
    extra = sorted(set(back_t) - set(sent_t))
    differ = sorted(k for k in set(sent_t) & set(back_t) if sent_t[k] != back_t[k])
    _say("\n-- round trip")
    _say(f"properties computed: {len(sent_t):,}  received back: {len(back_t):,}  "
         f"lost: {len(lost)}  extra: {len(extra)}  different: {len(differ)}  "
         f"failed rows: {result.failed + result.invalid}")
    for k in (lost + extra + differ)[:10]:
        _say(f"  mismatch: {k}")
    ok = not lost and not extra and not differ and result.failed == 0 and result.invalid == 0 \
        and result.sent == len(messages)
    _say("OK: the round trip through LocalSegment matches, 0 lost" if ok
         else "FAILED: the round trip does not match")
    return 0 if ok else 1


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.command == "demo":
        from ._errors import CmdsegError
        try:
            return demo(args.data, args.mapping, args.out)
        except CmdsegError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 2
    return 2


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
