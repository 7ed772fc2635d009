"""The FQL lexer: a port of ``@segment/fql-ts`` 1.10 ``lexer.js``, quirks included.

It turns trigger text into the tokens that :mod:`cmdseg_nb._fql_parse` reads. Like the
JavaScript original it works on UTF-16 code units (a lone surrogate is kept until a token's
text is built, then becomes U+FFFD), reads ``!`` as an operator only before a letter or ``(``
(anywhere else it must start ``!=``), keeps a string's quotes in its token, and raises
:class:`_LexError` where ``fql-ts`` returns ``{tokens: [], error}`` (``parse_fql`` then parses
no tokens, as ``parseFql`` does). ``_normalize`` joins ``ident . ident`` tokens into one dotted
identifier before parsing.
"""
from __future__ import annotations

__all__: list[str] = []  # only private names, imported by name from _fql_parse

# ---------------------------------------------------------------------------------------------
# Lexer: port of @segment/fql-ts 1.10 lexer.js (works on UTF-16 code units, like JavaScript)

_EOS = "-1"


class _LexError(Exception):
    pass


def _units(s: str) -> list[str]:
    b = s.encode("utf-16-le", "surrogatepass")
    return [chr(int.from_bytes(b[i : i + 2], "little")) for i in range(0, len(b), 2)]


def _from_units(s: str) -> str:
    return s.encode("utf-16-le", "surrogatepass").decode("utf-16-le", "replace")


def _is_alpha(c: str) -> bool:
    return len(c) == 1 and ("a" <= c <= "z" or "A" <= c <= "Z")


def _is_number(c: str) -> bool:
    return c != _EOS and len(c) == 1 and "0" <= c <= "9"


def _is_ws(c: str) -> bool:
    return c in (" ", "\t", "\n")


def _is_ident(c: str) -> bool:
    return c != _EOS and (_is_alpha(c) or _is_number(c) or c in ("_", "-", "\\"))


def _is_term(c: str) -> bool:
    return c == _EOS or _is_ws(c) or c in (",", "]", ")")


class _Lexer:
    def __init__(self, code: str):
        self.code = _units(code)
        self.pos = 0

    def next(self) -> tuple[str, bool]:
        if self.pos == len(self.code):
            return _EOS, True
        c = self.code[self.pos]
        self.pos += 1
        return c, False

    def peek(self) -> str:
        c, eos = self.next()
        if not eos:
            self.backup(1)
        return c

    def backup(self, n: int) -> None:
        for _ in range(n):
            if self.pos == 0:
                return
            self.pos -= 1

    def accept(self, s: str) -> bool:
        chars = ""
        for _ in s:
            c, eos = self.next()
            chars += c
            if eos:
                return False
            if _is_term(c):
                break
        if s == chars and _is_term(self.peek()):
            return True
        self.backup(len(chars))
        return False

    def lex(self) -> list[dict]:
        toks: list[dict] = []
        while True:
            c, eos = self.next()
            if eos:
                toks.append({"type": "eos", "value": "eos"})
                return toks
            if _is_ws(c):
                continue
            if c == "!":
                nc = self.peek()
                if _is_alpha(nc) or nc == "(":
                    toks.append({"type": "operator", "value": "!"})
                    continue
            if _is_alpha(c) or c in ("!", "=", ">", "<", "\\", "_"):
                toks.append(self.op_or_cond(c))
            elif _is_number(c) or c in ("-", "+"):
                toks.append(self.number(c))
            elif c in ('"', "'"):
                toks.append(self.string(c))
            else:
                simple = {".": "dot", "[": "brackleft", "]": "brackright", ",": "comma",
                          "(": "parenleft", ")": "parenright"}
                if c not in simple:
                    raise _LexError(f'invalid character "{_from_units(c)}"')
                toks.append({"type": simple[c], "value": c})

    def string(self, q: str) -> dict:
        s = ""
        while self.peek() != q:
            c, eos = self.next()
            s += c
            if eos:
                raise _LexError("unterminated string")
            if len(s) >= 100000:
                raise _LexError("unreasonable string length")
        self.accept(q)
        return {"type": "string", "value": _from_units(q + s + q)}

    def number(self, prev: str) -> dict:
        s, coming, dec = "", self.peek(), False
        while _is_number(coming) or coming == ".":
            c, _ = self.next()
            s += c
            if coming == ".":
                if _is_term(self.peek()):
                    raise _LexError("unexpected terminator after decimal point")
                if dec:
                    raise _LexError("multiple decimal points in one number")
                dec = True
            if len(s) >= 100000:
                raise _LexError("unreasonable number length")
            coming = self.peek()
        return {"type": "number", "value": prev + s}

    def op_or_cond(self, prev: str) -> dict:
        if prev == "=":
            return {"type": "operator", "value": "="}
        if prev == "!":
            if self.accept("="):
                return {"type": "operator", "value": "!="}
            raise _LexError(f"expected '=' after '!', got '{self.peek()}'")
        if prev == "a" and self.accept("nd"):
            return {"type": "conditional", "value": "and"}
        if prev == "o" and self.accept("r"):
            return {"type": "conditional", "value": "or"}
        if prev == "n" and self.accept("ull"):
            return {"type": "null", "value": "null"}
        if prev in ("<", ">"):
            if self.accept("="):
                return {"type": "operator", "value": prev + "="}
            return {"type": "operator", "value": prev}
        return self.ident(prev)

    def ident(self, prev: str) -> dict:
        s, c = "", prev
        while True:
            if c == "\\":
                if self.peek() == _EOS:
                    raise _LexError("expected character after escape character, got EOS")
                c, _ = self.next()
            s += c
            if len(s) >= 100000:
                raise _LexError("unreasonable literal length")
            if not _is_ident(self.peek()):
                break
            c, _ = self.next()
        nc = self.peek()
        if not (_is_term(nc) or nc in (".", "(", "=", "!")):
            raise _LexError(f"expected termination character after identifier, got {_from_units(nc)}")
        return {"type": "ident", "value": _from_units(s)}


def _normalize(toks: list[dict]) -> list[dict]:
    out: list[dict] = []
    i = 0
    while i < len(toks):
        last = out[-1] if out else None
        cur = toks[i]
        nxt = toks[i + 1] if i + 1 < len(toks) else None
        if last and last["type"] == "ident" and cur["type"] == "dot" and nxt and nxt["type"] == "ident":
            out.pop()
            out.append({"type": "ident", "value": last["value"] + cur["value"] + nxt["value"]})
            i += 2
        else:
            out.append(cur)
            i += 1
    return out
