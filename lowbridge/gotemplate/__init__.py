"""Go's text/template, the part ``docker --format`` uses (pure).

No maintained Python package implements Go's template language (the one wrapper there is
compiles Go at install time), so this module does, small: text and ``{{actions}}`` with ``{{- ``
and `` -}}`` trimming and ``{{/* comments */}}``; pipelines (``.A.B | lower``), variables (``$``,
``$x := …``, ``$x = …``), parenthesised pipelines and chains (``(index $c 0).HostPort``), string,
raw string, number, bool and nil literals; ``if``/``else if``/``else``, ``range`` (lists, maps in
key order, ``$i, $v :=``, ``else``, ``break``, ``continue``), ``with``/``else``; Go's functions
``and or not len index slice print printf println eq ne lt le gt ge html urlquery``, and the
caller's (docker's ``json split join title lower upper pad truncate``: lowbridge.cli.formats).
Not here: ``define``/``template``/``block`` and ``call`` (an error says so).

Values print as Go's ``fmt`` prints them (``map[k:v]`` in key order, ``[a b]``, ``<nil>``, a
missing value ``<no value>``), and errors read as Go's (``template: :1:2: executing "" at
<.Foo>: map has no entry for key "Foo"``).  Data are dicts, lists and scalars -- docker's raw
JSON, where ``missing_key_error`` is what ``docker inspect`` sets -- or objects naming their Go
type in ``go_type``, whose attributes are fields and whose methods take arguments (docker's
list contexts).
"""

from lowbridge.gotemplate.parse import TemplateError
from lowbridge.gotemplate.run import Template, parse
from lowbridge.gotemplate.values import MISSING, Nil, go_str, go_type

__all__ = ["MISSING", "Nil", "Template", "TemplateError", "go_str", "go_type", "parse"]
