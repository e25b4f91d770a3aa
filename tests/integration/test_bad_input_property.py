"""Property: any refused command line prints a one-line error, exits non-zero and changes
nothing (a command line argparse refuses also gets the subcommand's usage before the error and
docker's ``See 'lowbridge VERB --help'.`` after it).

Hypothesis builds command lines that must be refused -- malformed subnets, names, addresses,
ports, options, unknown flags and references, each value generated -- and every one runs as a
real command in one simulated host, whose whole state (store, links, addresses, routes,
namespaces, both firewalls) is compared before and after each.
"""

from __future__ import annotations

import ipaddress
import string

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from lowbridge import names, ports
from lowbridge.errors import InvalidInput
from lowbridge.simhost import SimHost
from tests.integration.conftest import state

EXAMPLES = 200
_text = st.text(
    alphabet=st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00"), max_size=20
)


def _not_cidr(text: str) -> bool:
    try:
        ipaddress.ip_network(text, strict=False)
    except ValueError:
        return True
    return "/" not in text  # a bare address is no subnet either


def _bad_name(text: str) -> bool:
    try:
        names.validate_name("network", text)
    except InvalidInput:
        return not text.startswith("-")  # "-x" would be read as a flag: another refusal
    return False


def _bad_port(text: str) -> bool:
    try:
        ports.parse(text)
    except InvalidInput:
        return not text.startswith("-")
    return False


def _bad_ip(text: str) -> bool:
    try:
        return ipaddress.ip_address(text) not in ipaddress.ip_network("10.33.0.0/24")
    except ValueError:
        return not text.startswith("-")


prefix = st.integers(33, 999).map(lambda n: f"10.34.0.0/{n}")
octets = st.tuples(*[st.integers(0, 999)] * 4).filter(lambda t: max(t) > 255)
subnets = st.one_of(
    prefix,
    octets.map(lambda t: ".".join(map(str, t)) + "/24"),
    _text.filter(lambda t: _not_cidr(t) and not t.startswith("-")),
)
bad_names = st.one_of(
    _text.filter(_bad_name),
    st.text(string.ascii_lowercase, min_size=64, max_size=80),
)
flags = st.text(string.ascii_lowercase + "-", min_size=3, max_size=12).map(lambda t: f"--zz{t}")

COMMANDS = st.one_of(
    subnets.map(lambda s: ("network", "create", "--subnet", s, "hx")),
    bad_names.map(lambda n: ("network", "create", "--subnet", "10.35.0.0/24", n)),
    # An empty --name is no name (Docker generates one): not bad input.
    bad_names.filter(bool).map(lambda n: ("container", "create", "--name", n)),
    _text.filter(_bad_port).map(lambda p: ("container", "create", "--name", "hp", "-p", p)),
    _text.filter(_bad_ip).map(lambda ip: ("container", "create", "--network", "net", "--ip", ip)),
    st.sampled_from(["--dns-search", "--dns-option"]).flatmap(
        lambda flag: _text.map(lambda t: ("container", "create", flag, f"x\n{t}"))
    ),
    _text.filter(lambda t: not t.isascii() or not t.isdigit() or not t).map(
        lambda m: ("network", "create", "-o", f"com.docker.network.driver.mtu={m}", "hm")
    ),
    _text.filter(lambda t: "=" not in t and not t.startswith("-")).map(
        lambda a: ("network", "create", "--subnet", "10.36.0.0/24", "--aux-address", a, "ha")
    ),
    st.text(string.ascii_lowercase + string.digits, min_size=1, max_size=12).flatmap(
        lambda ref: st.sampled_from(
            [
                ("network", "connect", f"no{ref}", "ctr"),
                ("network", "connect", "net", f"no{ref}"),
                ("network", "disconnect", "net", f"no{ref}"),
                ("network", "rm", f"no{ref}"),
                ("rm", f"no{ref}"),
                ("inspect", f"no{ref}"),
                ("network", "create", "-d", f"no{ref}", "hd"),
            ]
        )
    ),
    st.sampled_from(
        [("network", "create"), ("container", "create"), ("network", "ls"), ("ps",), ("run",)]
    ).flatmap(lambda argv: flags.map(lambda f: (*argv, f))),
)


@pytest.fixture(scope="module")
def host():
    with SimHost("prop") as h:
        h.lb("network", "create", "--subnet", "10.33.0.0/24", "net")
        h.lb("container", "create", "--name", "ctr", "--network", "net")
        h.before = state(h)
        yield h


@settings(
    max_examples=EXAMPLES,
    deadline=None,
    derandomize=False,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(argv=COMMANDS)
def test_refused_command_lines_are_one_line_and_change_nothing(host, argv):
    proc = host.lb(*argv, check=False)
    assert proc.returncode not in (0, 70), (argv, proc.returncode, proc.stdout, proc.stderr)
    lines = proc.stderr.strip().splitlines()
    errors = [i for i, line in enumerate(lines) if line.startswith("lowbridge: error: ")]
    assert len(errors) == 1, (argv, proc.stderr)  # the error itself is one line
    if len(lines) > 1:  # a wrong command line: the usage before it, docker's pointer after it
        assert lines[0].startswith("usage: lowbridge ") and errors == [len(lines) - 2], lines
        assert lines[-1].startswith("See 'lowbridge ") and lines[-1].endswith(" --help'."), lines
    assert "Traceback" not in proc.stderr
    assert state(host) == host.before, argv
