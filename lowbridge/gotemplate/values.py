"""Values as Go's templates see them: how they print (``fmt``), which are true, their Go type
names (for errors), and Go's built-in template functions."""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from typing import Any


class _Missing:
    """Go's invalid reflect.Value: a missing map entry (prints ``<no value>``)."""

    def __repr__(self) -> str:
        return "<no value>"


MISSING: Any = _Missing()


class Nil:
    """A typed nil (a nil slice or map): false, empty, and printed as Go prints it (``[]``,
    ``map[]``), where raw JSON has only null."""

    def __init__(self, text: str):
        self.text = text

    def __repr__(self) -> str:
        return self.text


def go_str(v: object, top: bool = True) -> str:
    """``fmt.Sprint(v)`` for the values templates see."""
    if v is MISSING or (v is None and top):
        return "<no value>" if v is MISSING or top else "<nil>"
    if v is None:
        return "<nil>"
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, float):
        return _go_float(v)
    if isinstance(v, Nil):
        return v.text
    if isinstance(v, dict):
        return (
            "map[" + " ".join(f"{go_str(k, False)}:{go_str(v[k], False)}" for k in sorted(v)) + "]"
        )
    if isinstance(v, list | tuple):
        return "[" + " ".join(go_str(x, False) for x in v) + "]"
    return str(v)


def _go_float(f: float) -> str:
    """%v of a float64 (strconv 'g', shortest): an exponent below 1e-4 and from 1e6."""
    if f != f or f in (float("inf"), float("-inf")):
        return "NaN" if f != f else ("+Inf" if f > 0 else "-Inf")
    if f == 0:
        return "0"
    mantissa, _, e = repr(abs(f)).partition("e")
    whole, _, frac = mantissa.partition(".")
    lead = len(whole) - 1 if whole != "0" else -(len(frac) - len(frac.lstrip("0")) + 1)
    exp = lead + int(e or 0)
    digits = (whole + frac).strip("0") or "0"
    sign = "-" if f < 0 else ""
    if exp < -4 or exp >= 6:
        head = digits[0] + ("." + digits[1:] if len(digits) > 1 else "")
        return f"{sign}{head}e{'+' if exp >= 0 else '-'}{abs(exp):02d}"
    if exp < 0:
        return f"{sign}0.{'0' * (-exp - 1)}{digits}"
    digits = digits.ljust(exp + 1, "0")
    return sign + digits[: exp + 1] + ("." + digits[exp + 1 :] if len(digits) > exp + 1 else "")


def truth(v: object) -> bool:
    """Go's ``if``: false, 0, nil, missing and empty strings, lists and maps are false."""
    if v is MISSING or v is None or isinstance(v, Nil):
        return False
    if isinstance(v, bool | int | float | str | list | tuple | dict):
        return bool(v)
    return True


def go_type(v: object) -> str:
    """The Go type a value of docker's raw JSON has (for errors)."""
    if hasattr(v, "go_type"):
        return str(v.go_type)
    return {dict: "map[string]interface {}", list: "[]interface {}", tuple: "[]interface {}",
            str: "string", bool: "bool", int: "json.Number", float: "float64"}.get(
        type(v), "interface {}")  # fmt: skip


# ------------------------------------------------------------------ Go's functions
def _index(item: object, *keys: object) -> object:
    for key in keys:
        if isinstance(item, dict):
            item = item.get(key, MISSING) if isinstance(key, str) else _bad_key(key)
        elif isinstance(item, list | tuple | str):
            if not isinstance(key, int) or isinstance(key, bool):
                raise ValueError(f"cannot index slice/array with type {go_type(key)}")
            if not 0 <= key < len(item):
                raise IndexError(f"index out of range: {key}")
            item = item[key]
        else:
            raise ValueError(f"can't index item of type {go_type(item)}")
    return item


def _bad_key(key: object) -> object:
    raise ValueError(f"value has type {go_type(key)}; should be string")


def _slice(item: object, *bounds: int) -> object:
    if not isinstance(item, list | tuple | str):
        raise ValueError(f"can't slice item of type {go_type(item)}")
    lo, hi = (list(bounds) + [0, len(item)][len(bounds) :])[:2]
    if not 0 <= lo <= hi <= len(item):
        raise IndexError(f"index out of range: {hi}")
    return item[lo:hi]


def _len(item: object) -> int:
    if not isinstance(item, list | tuple | str | dict):
        raise ValueError(f"len of type {go_type(item)}")
    return len(item)


def _comparable(a: object, b: object) -> tuple[object, object]:
    number = (int, float)
    if isinstance(a, number) and isinstance(b, number) and not isinstance(a, bool) and (
            not isinstance(b, bool)):  # fmt: skip
        return a, b
    if type(a) is not type(b) and a is not None and b is not None:
        raise ValueError("incompatible types for comparison")
    return a, b


def _eq(a: object, *others: object) -> bool:
    if not others:
        raise TypeError("missing argument for comparison")
    return any(x == y for x, y in (_comparable(a, b) for b in others))


def _ordered(op: Callable[[Any, Any], bool]) -> Callable[[object, object], bool]:
    def compare(a: object, b: object) -> bool:
        x, y = _comparable(a, b)
        if not isinstance(x, int | float | str) or isinstance(x, bool):
            raise ValueError("invalid type for comparison")
        return op(x, y)

    return compare


def sprint(*args: object) -> str:
    """``fmt.Sprint``: spaces between operands when neither is a string."""
    out = ""
    for i, a in enumerate(args):
        if i and not isinstance(a, str) and not isinstance(args[i - 1], str):
            out += " "
        out += go_str(a, top=False) if a is not MISSING else "<no value>"
    return out


_VERB = re.compile(r"%([-+# 0]*)(\d+|\*)?(?:\.(\d+|\*))?([a-zA-Z%])")


def sprintf(fmt: str, *args: object) -> str:
    """``fmt.Sprintf`` for the verbs templates use: v s q d t x X o b e E f F g G c %."""
    values = list(args)
    used = 0

    def one(m: re.Match) -> str:
        nonlocal used
        flags, width, prec, verb = m.group(1), m.group(2), m.group(3), m.group(4)
        if verb == "%":
            return "%"
        if used >= len(values):
            return f"%!{verb}(MISSING)"
        v = values[used]
        used += 1
        spec = "%" + flags.replace("#", "") + (width or "") + (f".{prec}" if prec else "")
        if verb in "vs":
            return (spec + "s") % (v if isinstance(v, str) else go_str(v, top=False))
        if verb == "q" and isinstance(v, str):
            return (spec + "s") % json.dumps(v, ensure_ascii=False)
        if verb == "t" and isinstance(v, bool):
            return (spec + "s") % go_str(v)
        if verb in "dxXob" and isinstance(v, int) and not isinstance(v, bool):
            align = "<" if "-" in flags else ""
            sign = "+" if "+" in flags else " " if " " in flags else ""
            zero = "0" if "0" in flags and not align else ""
            return format(v, f"{align}{sign}{zero}{width or ''}{verb}")
        if verb in "xX" and isinstance(v, str):
            digits = v.encode().hex()
            return (spec + "s") % (digits if verb == "x" else digits.upper())
        if verb in "eEfFgG" and isinstance(v, int | float) and not isinstance(v, bool):
            return (spec + verb) % v
        if verb == "c" and isinstance(v, int):
            return chr(v)
        return f"%!{verb}({go_type(v)}={go_str(v, top=False)})"

    out = _VERB.sub(one, fmt)
    if used < len(values):
        extra = ", ".join(f"{go_type(v)}={go_str(v, top=False)}" for v in values[used:])
        out += f"%!(EXTRA {extra})"
    return out


def _html(*args: object) -> str:
    text = sprint(*args)
    for a, b in (("&", "&amp;"), ("'", "&#39;"), ("<", "&lt;"), (">", "&gt;"), ('"', "&#34;"),
                 ("\0", "\uFFFD")):  # fmt: skip
        text = text.replace(a, b)
    return text


def _urlquery(*args: object) -> str:
    from urllib.parse import quote_plus

    return quote_plus(sprint(*args))


BUILTINS: dict[str, Callable] = {
    "and": lambda *a: a[-1],  # evaluated in _Run.call (short-circuit)
    "or": lambda *a: a[-1],
    "not": lambda v: not truth(v),
    "len": _len,
    "index": _index,
    "slice": _slice,
    "print": sprint,
    "printf": sprintf,
    "println": lambda *a: " ".join(go_str(x, top=False) for x in a) + "\n",
    "eq": _eq,
    "ne": lambda a, b: not _eq(a, b),
    "lt": _ordered(lambda a, b: a < b),
    "le": _ordered(lambda a, b: a <= b),
    "gt": _ordered(lambda a, b: a > b),
    "ge": _ordered(lambda a, b: a >= b),
    "html": _html,
    "urlquery": _urlquery,
}
