"""Lexing and parsing a template into its tree (lowbridge.gotemplate.tree), as Go's parser does:
trim markers, comments, pipelines, declarations, blocks; functions and variables are checked here,
so an unknown one is a parse error."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from lowbridge.gotemplate.tree import (
    Action,
    Block,
    Chain,
    Command,
    Field,
    Identifier,
    Jump,
    Literal,
    Node,
    Pipe,
    Text,
    Variable,
)


class TemplateError(Exception):
    """A template that does not parse or execute; the message is Go's."""


_TOKEN = re.compile(
    r"""(?P<space>\s+)
    |(?P<str>"(?:[^"\\\n]|\\.)*")|(?P<raw>`[^`]*`)|(?P<char>'(?:[^'\\\n]|\\.)+')
    |(?P<op>:=|[()|=,])
    |(?P<var>\$\w*(?:\.\w+)*)
    |(?P<field>(?:\.\w+)+|\.)
    |(?P<num>[-+]?(?:0[xX][0-9a-fA-F_]+|(?:\d[\d_]*(?:\.\d*)?|\.\d+)(?:[eE][-+]?\d+)?))
    |(?P<word>[A-Za-z_]\w*)""",
    re.VERBOSE,
)
_SPACE = " \t\r\n"


@dataclass
class Token:
    kind: str  # a group of _TOKEN
    text: str
    pos: int
    spaced: bool  # whitespace came before it (".A" right after ")" chains)


def _pieces(text: str) -> Iterator[tuple[str, int, Any]]:
    """("text", pos, str) and ("action", pos, [Token]) in order, trimmed as ``{{- `` and
    `` -}}`` ask; comments dropped."""
    i, trim = 0, False
    while True:
        start = text.find("{{", i)
        chunk = text[i:] if start < 0 else text[i:start]
        left = start >= 0 and text[start + 2 : start + 3] == "-"
        left = left and text[start + 3 : start + 4] in tuple(_SPACE)
        chunk = chunk.lstrip(_SPACE) if trim else chunk
        chunk = chunk.rstrip(_SPACE) if left else chunk
        if chunk:
            yield "text", i, chunk
        if start < 0:
            return
        inner = start + (4 if left else 2)
        if text.startswith("/*", inner):
            close = text.find("*/", inner + 2)
            if close < 0:
                raise _error(text, start, "unclosed comment")
            end = close + 2
            trim = text.startswith(" -}}", end)
            if not (trim or text.startswith("}}", end)):
                raise _error(text, start, "comment ends before closing delimiter")
            i = end + (4 if trim else 2)
            continue
        tokens, i, trim = _tokens(text, inner, start)
        yield "action", start, tokens


def _tokens(text: str, i: int, start: int) -> tuple[list[Token], int, bool]:
    """The tokens of the action at ``i``; where the text goes on; whether it trims after."""
    out: list[Token] = []
    spaced = True
    while True:
        if text.startswith("}}", i):
            return out, i + 2, False
        if spaced and text.startswith("-}}", i):
            return out, i + 3, True
        m = _TOKEN.match(text, i)
        if m is None:
            if i >= len(text) or text.startswith("\n", i):
                raise _error(text, start, "unclosed action")
            raise _error(text, i, f"unexpected {text[i]!r} in command")
        if m.lastgroup == "space":
            spaced = True
        else:
            out.append(Token(m.lastgroup or "", m.group(), i, spaced))
            spaced = False
        i = m.end()


def _error(text: str, pos: int, msg: str) -> TemplateError:
    return TemplateError(f"template: :{text.count(chr(10), 0, pos) + 1}: {msg}")


# ------------------------------------------------------------------ parsing
class Parser:
    """Recursive descent over the pieces; checks functions and variables as Go's parser does."""

    def __init__(self, text: str, funcs: set[str]):
        self.text, self.funcs = text, funcs
        self.pieces = list(_pieces(text))
        self.i = 0
        self.vars = ["$"]
        self.loops = 0

    def error(self, pos: int, msg: str) -> TemplateError:
        return _error(self.text, pos, msg)

    def parse(self) -> list[Node]:
        nodes, end = self.nodes()
        if end is not None:
            raise self.error(end[1], f"unexpected {{{{{end[0]}}}}}")
        return nodes

    def nodes(self) -> tuple[list[Node], tuple[str, int, list[Token]] | None]:
        """Nodes up to an ``{{end}}`` or ``{{else …}}`` (returned: word, pos, the rest of its
        tokens), or to the end of the text (None)."""
        out: list[Node] = []
        while self.i < len(self.pieces):
            kind, pos, body = self.pieces[self.i]
            self.i += 1
            if kind == "text":
                out.append(Text(pos, body))
                continue
            if not body:
                raise self.error(pos, "missing value for command")
            word = body[0].text if body[0].kind == "word" else ""
            if word in ("end", "else"):
                return out, (word, pos, body[1:])
            if word in ("if", "range", "with"):
                out.append(self.block(word, pos, body[1:]))
            elif word in ("break", "continue"):
                if not self.loops:
                    raise self.error(pos, f"{{{{{word}}}}} outside {{{{range}}}}")
                out.append(Jump(pos, word))
            elif word in ("define", "template", "block"):
                raise self.error(pos, f"{{{{{word}}}}} is not supported here")
            else:
                out.append(Action(pos, self.pipe(body, pos)))
        return out, None

    def block(self, kind: str, pos: int, tokens: list[Token]) -> Block:
        scope = len(self.vars)
        self.loops += kind == "range"
        b = Block(pos, kind, self.pipe(tokens, pos, pair=kind == "range"), [])
        b.body, end = self.nodes()
        self.loops -= kind == "range"
        if end is None:
            raise self.error(len(self.text), "unexpected EOF")
        word, at, rest = end
        if word == "else" and rest:
            if rest[0].text not in ("if", "with") or rest[0].kind != "word":
                raise self.error(at, f"unexpected {rest[0].text!r} in else")
            b.other = [self.block(rest[0].text, at, rest[1:])]  # it takes our {{end}}
        elif word == "else":
            b.other, end = self.nodes()
            if end is None or end[0] != "end" or end[2]:
                raise self.error(at if end is None else end[1], "expected end; found else")
        elif rest:
            raise self.error(at, f"unexpected {rest[0].text!r} in end")
        del self.vars[scope:]
        return b

    def pipe(self, tokens: list[Token], pos: int, pair: bool = False) -> Pipe:
        decl, assign, i = self._decl(tokens, pair)
        cmds: list[Command] = []
        args: list[Node] = []
        while i < len(tokens):
            t = tokens[i]
            if t.kind == "op" and t.text == "|":
                if not args:
                    raise self.error(t.pos, "missing command")
                cmds.append(Command(args[0].pos, args))
                args, i = [], i + 1
                continue
            node, i = self.operand(tokens, i)
            args.append(node)
        if not args:
            raise self.error(pos, "missing value for command")
        cmds.append(Command(args[0].pos, args))
        if decl and not assign:
            self.vars += decl
        return Pipe(pos, decl, assign, cmds)

    def _decl(self, tokens: list[Token], pair: bool) -> tuple[list[str], bool, int]:
        """``$x :=``, ``$x =`` or (in a range) ``$i, $v :=`` at the start of a pipeline."""
        names, i = [], 0
        while i < len(tokens) and tokens[i].kind == "var" and "." not in tokens[i].text:
            names.append(tokens[i].text)
            nxt = tokens[i + 1].text if i + 1 < len(tokens) else ""
            if nxt == "," and pair and len(names) == 1:
                i += 2
                continue
            if nxt in (":=", "="):
                if nxt == "=" and any(n not in self.vars for n in names):
                    raise self.error(tokens[i].pos, f'undefined variable "{names[0]}"')
                return names, nxt == "=", i + 2
            break
        return [], False, 0

    def operand(self, tokens: list[Token], i: int) -> tuple[Node, int]:
        t = tokens[i]
        if t.kind == "op" and t.text == "(":
            depth, j = 1, i + 1
            while j < len(tokens) and depth:
                depth += {"(": 1, ")": -1}.get(tokens[j].text, 0) if tokens[j].kind == "op" else 0
                j += 1
            if depth:
                raise self.error(t.pos, "unclosed left paren")
            inner = self.pipe(tokens[i + 1 : j - 1], t.pos)
            if j < len(tokens) and tokens[j].kind == "field" and not tokens[j].spaced:
                return Chain(t.pos, inner, tuple(tokens[j].text.split(".")[1:])), j + 1
            return inner, j
        if t.kind == "field":
            names = () if t.text == "." else tuple(t.text.split(".")[1:])
            return Field(_chained(t.pos, names), names), i + 1
        if t.kind == "var":
            name, *rest = t.text.split(".")
            if name not in self.vars:
                raise self.error(t.pos, f'undefined variable "{name}"')
            pos = t.pos + len(name) if rest else t.pos
            return Variable(pos, name, tuple(rest)), i + 1
        if t.kind in ("str", "raw", "char"):
            return Literal(t.pos, _unquote(t.text), t.text), i + 1
        if t.kind == "num":
            return Literal(t.pos, _number(t.text), t.text), i + 1
        if t.kind == "word" and t.text in ("true", "false", "nil"):
            return Literal(t.pos, {"true": True, "false": False}.get(t.text), t.text), i + 1
        if t.kind == "word" and t.text in self.funcs:
            return Identifier(t.pos, t.text), i + 1
        if t.kind == "word":
            raise self.error(t.pos, f'function "{t.text}" not defined')
        raise self.error(t.pos, f"unexpected {t.text!r} in operand")


def _chained(pos: int, names: tuple[str, ...]) -> int:
    """Where Go's parser puts a field chain (``.A.B``): at its second field, where the chain
    it builds begins (text/template/parse: operand)."""
    return pos + 1 + len(names[0]) if len(names) > 1 else pos


def _unquote(text: str) -> object:
    if text[0] == "`":
        return text[1:-1]
    body = json.loads('"' + text[1:-1].replace('"', '\\"') + '"') if text[0] == "'" else None
    return ord(body) if body is not None else json.loads(text)  # a 'c' is a rune: its number


def _number(text: str) -> int | float:
    clean = text.replace("_", "")
    try:
        return int(clean, 0)
    except ValueError:
        return float(clean)
