"""Executing a parsed template, by Go's rules for each node (text/template's exec.go)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from lowbridge.gotemplate.parse import Parser, TemplateError
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
    describe,
)
from lowbridge.gotemplate.values import BUILTINS, MISSING, Nil, go_str, go_type, truth


class _Break(Exception):
    pass


class _Continue(Exception):
    pass


class Template:
    """A parsed template (:func:`parse`); :meth:`execute` renders it."""

    def __init__(self, text: str, nodes: list[Node], funcs: dict[str, Callable]):
        self.text, self.nodes, self.funcs = text, nodes, funcs

    def execute(
        self,
        data: object,
        missing_key_error: bool = False,
        nil_text: Callable[[str], str] | None = None,
    ) -> str:
        """Render for ``data``.  ``missing_key_error``: a missing map key is an error (Go's
        ``missingkey=error``).  ``nil_text``: what a nil field prints, by its name (Go prints
        a typed nil slice as ``[]``; raw JSON has no types, so the caller says)."""
        run = _Run(self, missing_key_error, nil_text)
        out: list[str] = []
        run.nodes(self.nodes, data, out)
        return "".join(out)


def parse(text: str, funcs: dict[str, Callable] | None = None) -> Template:
    """Parse ``text``; ``funcs`` adds functions to Go's."""
    every = {**BUILTINS, **(funcs or {})}
    return Template(text, Parser(text, set(every)).parse(), every)


class _Run:
    """One execution: the variables in scope, and Go's rules for each node."""

    def __init__(self, tmpl: Template, missing_key_error: bool, nil_text):  # noqa: ANN001
        self.t, self.missing_key_error = tmpl, missing_key_error
        self.nil_text = nil_text
        self.vars: list[list] = []

    def error(self, node: Node, msg: str) -> TemplateError:
        text = self.t.text
        line = text.count("\n", 0, node.pos) + 1
        col = node.pos - (text.rfind("\n", 0, node.pos) + 1)
        return TemplateError(f'template: :{line}:{col}: executing "" at <{describe(node)}>: {msg}')

    # -- control
    def nodes(self, nodes: list[Node], dot: object, out: list[str]) -> None:
        for n in nodes:
            if isinstance(n, Text):
                out.append(n.text)
            elif isinstance(n, Action):
                value = self.pipe(n.pipe, dot)
                if not n.pipe.decl:
                    out.append(go_str(value))
            elif isinstance(n, Block):
                scope = len(self.vars)
                getattr(self, "_" + n.kind)(n, dot, out)
                del self.vars[scope:]
            elif isinstance(n, Jump):
                raise _Break() if n.kind == "break" else _Continue()

    def _if(self, n: Block, dot: object, out: list[str]) -> None:
        self.nodes(n.body if truth(self.pipe(n.pipe, dot)) else n.other, dot, out)

    def _with(self, n: Block, dot: object, out: list[str]) -> None:
        value = self.pipe(n.pipe, dot)
        self.nodes(n.body, value, out) if truth(value) else self.nodes(n.other, dot, out)

    def _range(self, n: Block, dot: object, out: list[str]) -> None:
        value = self.pipe(n.pipe, dot, declare=False)
        if isinstance(value, dict):
            items: list = [(k, value[k]) for k in sorted(value)]
        elif isinstance(value, list | tuple):
            items = list(enumerate(value))
        elif isinstance(value, int) and not isinstance(value, bool):
            items = [(i, i) for i in range(value)]
        elif value is None or value is MISSING or isinstance(value, Nil):
            items = []
        else:
            raise self.error(n.pipe, f"range can't iterate over {go_str(value)}")
        if not items:
            self.nodes(n.other, dot, out)
        scope = len(self.vars)
        for key, item in items:
            del self.vars[scope:]
            names = n.pipe.decl
            if len(names) == 2:
                self.vars += [[names[0], key], [names[1], item]]
            elif names:
                self.vars.append([names[0], item])
            try:
                self.nodes(n.body, item, out)
            except _Break:
                break
            except _Continue:
                continue

    # -- pipelines
    def pipe(self, p: Pipe, dot: object, declare: bool = True) -> object:
        value: object = _NOTHING
        for cmd in p.cmds:
            value = self.command(cmd, dot, value)
        if declare and p.decl:
            if p.assign:
                next(v for v in reversed(self.vars) if v[0] == p.decl[0])[1] = value
            else:
                self.vars.append([p.decl[0], value])
        return value

    def command(self, cmd: Command, dot: object, final: object) -> object:
        head, args = cmd.args[0], cmd.args[1:]
        if isinstance(head, Identifier):
            return self.call(cmd, head.name, args, dot, final)
        if isinstance(head, Field):
            return self.fields(head, dot, head.names, args, dot, final)
        if isinstance(head, Variable):
            return self.fields(head, self.variable(head), head.names, args, dot, final)
        if isinstance(head, Chain):
            return self.fields(head, self.pipe(head.pipe, dot), head.names, args, dot, final)
        if args or final is not _NOTHING:
            raise self.error(head, f"can't give argument to non-function {describe(head)}")
        return self.pipe(head, dot) if isinstance(head, Pipe) else self.arg(head, dot)

    def variable(self, v: Variable) -> object:
        return next(value for name, value in reversed(self.vars) if name == v.name)

    def arg(self, n: Node, dot: object) -> object:
        if isinstance(n, Literal):
            return n.value
        if isinstance(n, Pipe):
            return self.pipe(n, dot, declare=False)
        if isinstance(n, Identifier):
            return self.call(Command(n.pos, [n]), n.name, [], dot, _NOTHING)
        return self.command(Command(n.pos, [n]), dot, _NOTHING)

    def fields(self, node: Node, receiver, names, args, dot, final) -> object:  # noqa: ANN001
        """``receiver.A.B args`` (the last name takes the arguments, if it is a method)."""
        if not names:
            if args or final is not _NOTHING:
                raise self.error(node, f"can't give argument to non-function {describe(node)}")
            return receiver
        for i, name in enumerate(names):
            last = i == len(names) - 1
            given = [self.arg(a, dot) for a in args] if last else []
            if last and final is not _NOTHING:
                given.append(final)
            receiver = self.field(node, receiver, name, given, last and bool(args))
        return receiver

    def field(self, node: Node, receiver: object, name: str, args: list, spelled: bool) -> object:
        if receiver is None or receiver is MISSING:
            raise self.error(node, f"nil pointer evaluating interface {{}}.{name}")
        if isinstance(receiver, dict):
            if args:
                raise self.error(node, f"{name} is not a method but has arguments")
            if name in receiver:
                value = receiver[name]
                return Nil(self.nil_text(name)) if value is None and self.nil_text else value
            if self.missing_key_error:
                raise self.error(node, f'map has no entry for key "{name}"')
            return MISSING
        member = getattr(receiver, name, MISSING) if hasattr(receiver, "go_type") else MISSING
        if member is MISSING or name.startswith("_") or not name[:1].isupper():
            raise self.error(node, f"can't evaluate field {name} in type {go_type(receiver)}")
        if callable(member):
            try:
                return member(*args)
            except TypeError:
                raise self.error(node, f"wrong number of args for {name}") from None
        if args:
            raise self.error(node, f"{name} is not a method but has arguments")
        return member

    def call(self, cmd: Command, name: str, args: list[Node], dot: object, final: object):  # noqa: ANN201
        fn = self.t.funcs[name]
        if name in ("and", "or"):  # short-circuit, as Go 1.18
            value: object = _NOTHING
            for a in args:
                value = self.arg(a, dot)
                if truth(value) == (name == "or"):
                    return value
            return final if final is not _NOTHING else value
        given = [self.arg(a, dot) for a in args]
        if final is not _NOTHING:
            given.append(final)
        try:
            return fn(*given)
        except TemplateError:
            raise
        except TypeError as exc:
            if "positional argument" in str(exc) or "takes" in str(exc):
                raise self.error(cmd, f"wrong number of args for {name}") from None
            raise self.error(cmd, f"error calling {name}: {exc}") from None
        except (ValueError, IndexError, KeyError) as exc:
            raise self.error(cmd, f"error calling {name}: {exc}") from None


_NOTHING: Any = object()  # no pipeline value yet (distinct from nil)
