"""``--format``, as docker's CLI reads it: Go templates (lowbridge.gotemplate) over the rows of a
list (lowbridge.output's ``Row`` classes) or over inspect documents, docker's template
functions, ``table`` headers laid out by Go's tabwriter, and ``json``.

Loaded only when a command is given ``--format``: the everyday tables need no template."""

from __future__ import annotations

import json
from collections.abc import Callable

from lowbridge import gotemplate, output
from lowbridge.errors import InvalidInput


def _json(value: object) -> str:
    """docker's ``json``: compact, no HTML escaping; a list row marshals its fields."""
    if isinstance(value, output.Row):
        value = value.marshal()
    none = value is gotemplate.MISSING or isinstance(value, gotemplate.Nil)
    return json.dumps(None if none else value, ensure_ascii=False,
                      separators=(",", ":"))  # fmt: skip


def _title(text: str) -> str:
    """Go's strings.Title: the first letter of each word upper-cased."""
    out, prev = [], " "
    for c in text:
        out.append(c.upper() if not (prev.isalnum() or prev == "_") else c)
        prev = c
    return "".join(out)


def _string(fn: Callable[..., object]) -> Callable[..., object]:
    """A function of a string (Go would refuse anything else)."""

    def call(value: object, *rest: object) -> object:
        if not isinstance(value, str):
            raise ValueError(
                f"wrong type for value; expected string; got {gotemplate.go_type(value)}"
            )
        return fn(value, *rest)

    return call


FUNCS: dict[str, Callable] = {
    "json": _json,
    "split": _string(lambda s, sep: s.split(sep) if sep else list(s)),
    "join": lambda items, sep: sep.join(gotemplate.go_str(i, top=False) for i in items),
    "title": _string(_title),
    "lower": _string(str.lower),
    "upper": _string(str.upper),
    "pad": _string(lambda s, before, after: " " * before + s + " " * after if s else s),
    "truncate": _string(lambda s, n: s[:n]),
}
# A table's header: the same template over the column titles, which these leave as they are.
HEADER_FUNCS: dict[str, Callable] = {
    **{name: (lambda v, *_: v) for name in ("json", "split", "join", "title", "lower", "upper",
                                             "truncate")},
}  # fmt: skip

# Fields of docker's inspect types that are nil slices or maps when empty: Go prints those as
# [] and map[], raw JSON only knows null (which prints <no value>).
_NIL_MAPS = {"ExposedPorts", "Options", "Labels", "Ports", "PortBindings", "Networks",
             "Containers"}  # fmt: skip


def _nil(name: str) -> str:
    return "map[]" if name in _NIL_MAPS else "[]"


# docker's words for a template that does not parse, or does not execute (its list commands
# differ: ps has its own).
ERRORS = ("template parsing error", "template parsing error")


def _parse(text: str, errors: tuple[str, str] = ERRORS) -> gotemplate.Template:
    try:
        return gotemplate.parse(text, FUNCS)
    except gotemplate.TemplateError as exc:
        raise InvalidInput(f"{errors[0]}: {exc}") from None


def _execute(
    tmpl: gotemplate.Template, data: object, errors: tuple[str, str] = ERRORS, **kw: object
) -> str:
    try:
        return tmpl.execute(data, **kw)  # type: ignore[arg-type]
    except gotemplate.TemplateError as exc:
        raise InvalidInput(f"{errors[1]}: {exc}") from None


class _Header:
    """What a ``table`` format's header row is made from: each field's column title."""

    def __init__(self, titles: dict[str, str]):
        self.go_type = "formatter.SubHeaderContext"
        self.__dict__.update(titles)
        label = titles.get("Label", "LABEL")
        self.Label = lambda *_: label  # noqa: N815 (docker's name)


def rows(items: list[output.Row], fmt: str, titles: dict[str, str]) -> str:
    """What ``docker ps``/``docker network ls --format FMT`` prints for these rows: ``json``
    (one object a line), ``table TEMPLATE`` (a header, then columns at its tabs) or a
    template (a line a row).  As docker, ``\\t`` and ``\\n`` typed in FMT are a tab and a
    newline."""
    table = fmt.startswith("table")
    text = "{{json .}}" if fmt == "json" else fmt[5:] if table else fmt
    text = text.strip(" ").replace("\\t", "\t").replace("\\n", "\n")
    errors = items[0].ERRORS if items else ERRORS
    tmpl = _parse(text, errors)
    body = "".join(_execute(tmpl, row, errors) + "\n" for row in items)
    if not table:
        return body
    try:
        header = gotemplate.parse(text, HEADER_FUNCS).execute(_Header(titles))
    except gotemplate.TemplateError:
        header = ""  # as docker: a header that does not render is left out
    return output.tabwrite((header + "\n" + body).split("\n"))


def documents(docs: list[dict], fmt: str | None) -> str:
    """What ``docker inspect --format FMT`` prints: the documents as indented JSON (no FMT),
    compact (``json``), or the template once per document (a missing key is an error)."""
    if not fmt:
        return json.dumps(docs, indent=4) + "\n"
    if fmt == "json":
        return json.dumps(docs, separators=(",", ":"), ensure_ascii=False) + "\n"
    tmpl = _parse(fmt)
    out = "".join(_execute(tmpl, d, missing_key_error=True, nil_text=_nil) + "\n" for d in docs)
    return out or "\n"
