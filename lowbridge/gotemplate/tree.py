"""The parse tree of a template: one node class per construct, and how Go's errors quote a node."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class Node:
    pos: int  # offset in the template text: Go's "line:column" in errors


@dataclass
class Text(Node):
    text: str


@dataclass
class Field(Node):
    names: tuple[str, ...]  # .A.B -> ("A", "B"); dot itself -> ()


@dataclass
class Variable(Node):
    name: str  # "$x", or "$" (the data)
    names: tuple[str, ...] = ()


@dataclass
class Literal(Node):
    value: object
    source: str


@dataclass
class Identifier(Node):
    name: str  # a function


@dataclass
class Chain(Node):
    pipe: Pipe  # (pipeline).A.B
    names: tuple[str, ...]


@dataclass
class Command(Node):
    args: list[Node]


@dataclass
class Pipe(Node):
    decl: list[str]
    assign: bool  # "$x = …" (a declared variable) rather than "$x := …"
    cmds: list[Command]


@dataclass
class Action(Node):
    pipe: Pipe


@dataclass
class Block(Node):
    kind: str  # "if", "range", "with"
    pipe: Pipe
    body: list[Node]
    other: list[Node] = field(default_factory=list)  # {{else}}: an "else if" is an if in it


@dataclass
class Jump(Node):
    kind: str  # "break", "continue"


def describe(n: Node) -> str:
    """A node as Go's errors quote it (``<.A.B>``, ``<index .M "k">``)."""
    if isinstance(n, Field):
        return "".join("." + x for x in n.names) or "."
    if isinstance(n, Variable):
        return n.name + "".join("." + x for x in n.names)
    if isinstance(n, Literal):
        return n.source
    if isinstance(n, Identifier):
        return n.name
    if isinstance(n, Chain):
        return f"({describe(n.pipe)})" + "".join("." + x for x in n.names)
    if isinstance(n, Command):
        return " ".join(f"({describe(a)})" if isinstance(a, Pipe) else describe(a) for a in n.args)
    if isinstance(n, Pipe):
        head = ", ".join(n.decl) + (" = " if n.assign else " := ") if n.decl else ""
        return head + " | ".join(describe(c) for c in n.cmds)
    return type(n).__name__
