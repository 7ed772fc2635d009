"""The Webhooks (Actions) destination configuration: up to 5 mappings, each a trigger and data.

Shape, as Segment shows it and as users bring it::

    [{"name": "Identify traits", "trigger": "type = \\"identify\\"", "data": {"@path": "$."}}]

Rules (Segment Webhooks (Actions) destination): at most 5 mappings; ``data`` defaults to
``{"@path": "$."}`` (the whole event) when omitted; the trigger is FQL
(:mod:`cmdseg_nb._fql`), the data is mapping-kit (:mod:`cmdseg_nb._mappingkit`).
"""
from __future__ import annotations

import html
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ._errors import MappingError
from ._fql_parse import parse_fql
from ._mappingkit_validate import validate_mapping

__all__ = ["Mapping", "MappingConfig", "MAX_MAPPINGS", "DEFAULT_DATA"]

MAX_MAPPINGS = 5
DEFAULT_DATA: dict = {"@path": "$."}
DEFAULT_TRIGGER = 'type = "identify"'


def _freeze(v: Any) -> Any:
    return json.loads(json.dumps(v))  # a private deep copy: callers' objects are never shared


@dataclass(frozen=True)
class Mapping:
    """One mapping of the destination.

    Attributes
    ----------
    name : str
        Shown name; unique inside a configuration.
    trigger : str
        Segment FQL, e.g. ``'type = "identify"'``.
    data : JSON value
        Mapping-kit ``data`` field; ``{"@path": "$."}`` sends the whole event.
    """

    name: str
    trigger: str
    data: Any

    def to_dict(self) -> dict:
        return {"name": self.name, "trigger": self.trigger, "data": _freeze(self.data)}


class MappingConfig:
    """A validated list of mappings, as in Segment's Webhooks (Actions) destination.

    Build with :meth:`from_dict` (a list of ``{"name", "trigger", "data"}`` dicts, or
    ``{"mappings": [...]}``), :meth:`from_json` (a file path or JSON text) or :meth:`default`.

    Raises
    ------
    MappingError
        On construction, naming the mapping and the JSON path: not a list, more than 5
        mappings, a mapping that is not an object or has unknown keys, a missing/empty/duplicate
        name, a trigger that is not a string or does not parse, and every data mistake
        :func:`cmdseg_nb._mappingkit_validate.validate_mapping` reports.
    """

    __slots__ = ("_mappings",)

    def __init__(self, mappings):
        items = list(mappings)
        if len(items) > MAX_MAPPINGS:
            raise MappingError(f"Segment allows at most {MAX_MAPPINGS} mappings per Webhooks destination, "
                               f"got {len(items)}; remove some", path="$")
        if not items:
            raise MappingError("the configuration has no mapping; use MappingConfig.default()", path="$")
        seen: set[str] = set()
        out = []
        for i, m in enumerate(items):
            if isinstance(m, Mapping):
                m = m.to_dict()
            if not isinstance(m, dict):
                raise MappingError(f"a mapping must be an object, got {type(m).__name__}", path=f"$[{i}]")
            extra = set(m) - {"name", "trigger", "data"}
            name = m.get("name")
            if extra:
                raise MappingError(f"unknown key(s) {sorted(extra)}; a mapping has name, trigger, data",
                                   mapping=name if isinstance(name, str) else None, path=f"$[{i}]")
            if not isinstance(name, str) or not name.strip():
                raise MappingError("a mapping needs a non-empty string name", path=f"$[{i}].name")
            if name in seen:
                raise MappingError("two mappings have this name; names must be unique", mapping=name,
                                   path=f"$[{i}].name")
            seen.add(name)
            if "trigger" not in m:
                raise MappingError('a mapping needs a trigger, e.g. type = "identify"', mapping=name,
                                   path=f"$[{i}].trigger")
            parse_fql(m["trigger"], mapping_name=name, path=f"$[{i}].trigger")
            data = _freeze(m.get("data", DEFAULT_DATA))
            validate_mapping(data, mapping_name=name, base_path=f"$[{i}].data")
            out.append(Mapping(name=name, trigger=m["trigger"], data=data))
        self._mappings = tuple(out)

    @property
    def mappings(self) -> tuple[Mapping, ...]:
        return self._mappings

    @classmethod
    def from_dict(cls, obj) -> "MappingConfig":
        """From a list of mapping dicts, or a dict with a ``"mappings"`` list."""
        if isinstance(obj, dict) and set(obj) == {"mappings"}:
            obj = obj["mappings"]
        if not isinstance(obj, (list, tuple)):
            raise MappingError(f"expected a list of mappings, got {type(obj).__name__}", path="$")
        return cls(obj)

    @classmethod
    def from_json(cls, path_or_text: str | os.PathLike) -> "MappingConfig":
        """From a JSON file path or JSON text (text is recognised by a leading ``[`` or ``{``)."""
        text = str(path_or_text)
        if not isinstance(path_or_text, os.PathLike) and text.lstrip()[:1] in ("[", "{"):
            source = "JSON text"
        else:
            source = text
            try:
                text = Path(path_or_text).read_text(encoding="utf-8")
            except OSError as e:
                raise MappingError(f"cannot read mapping file {source}: {e.strerror}") from None
        try:
            obj = json.loads(text)
        except ValueError as e:
            raise MappingError(f"{source} is not valid JSON: {e}", path="$") from None
        return cls.from_dict(obj)

    @classmethod
    def default(cls) -> "MappingConfig":
        """The recommended setup: identify events, whole event as data (traits become properties)."""
        return cls([{"name": "Identify traits", "trigger": DEFAULT_TRIGGER, "data": DEFAULT_DATA}])

    def to_dict(self) -> list[dict]:
        return [m.to_dict() for m in self._mappings]

    def to_json(self, indent: int | None = 2) -> str:
        return json.dumps(self.to_dict(), indent=indent, ensure_ascii=False)

    def __len__(self) -> int:
        return len(self._mappings)

    def __iter__(self):
        return iter(self._mappings)

    def __eq__(self, other) -> bool:
        return isinstance(other, MappingConfig) and self.to_dict() == other.to_dict()

    def __hash__(self) -> int:
        return hash(self.to_json(indent=None))

    def __repr__(self) -> str:
        lines = [f"MappingConfig({len(self)} mapping{'s' if len(self) != 1 else ''})"]
        for m in self._mappings:
            data = json.dumps(m.data, ensure_ascii=False)
            if len(data) > 60:
                data = data[:57] + "..."
            lines.append(f"  {m.name!r}: {m.trigger}  ->  {data}")
        return "\n".join(lines)

    def _repr_html_(self) -> str:
        rows = "".join(
            f"<tr><td>{html.escape(m.name)}</td><td><code>{html.escape(m.trigger)}</code></td>"
            f"<td><pre style='margin:0'>{html.escape(json.dumps(m.data, indent=1, ensure_ascii=False))}</pre></td></tr>"
            for m in self._mappings)
        return ("<table class='cmdseg-mapping-config'><thead><tr><th>name</th><th>trigger</th>"
                f"<th>data</th></tr></thead><tbody>{rows}</tbody></table>")
