"""Shared test helpers. Cases from public bug reports live in tests/cases/cases.jsonl
(a copy of ../shared/cases/cases.jsonl; each case is a test with its expected values)."""
from __future__ import annotations

import json
import sys
from functools import lru_cache
from pathlib import Path

TESTS = Path(__file__).resolve().parent
ROOT = TESTS.parent
DATA = ROOT / "data"
RUDDER = DATA / "rudderstack_tutorial"     # the bundled warehouse export
EXAMPLE = DATA / "example_mapping.json"    # the bundled custom mapping
if str(TESTS) not in sys.path:
    sys.path.insert(0, str(TESTS))


@lru_cache(maxsize=None)
def _cases() -> dict[str, dict]:
    out = {}
    for line in (TESTS / "cases" / "cases.jsonl").read_text(encoding="utf-8").splitlines():
        if line.strip():
            case = json.loads(line)
            out[case["id"]] = case
    return out


def load_case(case_id: str) -> dict:
    """The case ``case_id`` (e.g. "B01") as a dict: id, source, component, input, expected."""
    return _cases()[case_id]
