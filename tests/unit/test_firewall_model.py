"""The firewall's view of the store (lowbridge.firewall.model): a Modeler keeps its last result
between calls and gives the same answer as a fresh pass whatever the run of changes -- a
changed record included, whatever object it is."""

from __future__ import annotations

import dataclasses

from lowbridge import ipam
from lowbridge.firewall import rules as R
from lowbridge.firewall.model import Modeler
from lowbridge.models import Container, Endpoint, Network, View, frozen
from lowbridge.ports import Exposed, PortMapping


def _net(name: str, subnet: str, **kw) -> Network:
    pool = ipam.plan_pool(subnet=subnet, gateway=None, ip_range=None, aux_addresses=None, taken=[])
    return Network(id=name * 8, name=name, driver=kw.pop("driver", "bridge"), pool=pool,
                   device=f"lb-{name}", **kw)  # fmt: skip


def _ctr(name: str, **kw) -> Container:
    return Container(id=(name + "0" * 64)[:64], name=name, netns=f"/run/netns/{name}", **kw)


def _ep(net: Network, ctr: Container, ip: str) -> Endpoint:
    return Endpoint(id=ctr.name + net.name, network_id=net.id, container_id=ctr.id,
                    ifname="eth0", ip=ip, gateway=str(net.pool.gateway))  # fmt: skip


def fresh(nets: list, ctrs: list, eps: list) -> R.Model:
    """A model from nothing."""
    return Modeler().model(View(nets, ctrs, eps))


def test_a_kept_model_equals_a_fresh_one_through_a_run_of_changes():
    bridge = _net("bridge", "172.17.0.0/16", predefined=True)
    front, back = _net("front", "10.1.0.0/24"), _net("back", "10.2.0.0/24")
    mac = _net("lan", "192.168.5.0/24", driver="macvlan")
    nets, ctrs, eps = [bridge, front, back, mac], [], []

    modeler = Modeler()

    def check() -> R.Model:
        got = modeler.model(View(nets, ctrs, eps))
        assert got == fresh(nets, ctrs, eps)
        return got

    check()
    for i in range(3):  # creates on one network: each extends the last model
        c = _ctr(f"web{i}")
        ctrs.append(c)
        eps.append(_ep(front, c, f"10.1.0.{10 + i}"))
        last = check()
    assert [e.ip for e in last.endpoints] == ["10.1.0.10", "10.1.0.11", "10.1.0.12"]
    assert [n.name for n in last.networks] == ["front", "back"]  # the default bridge is unused

    # A connect to the default bridge brings its rules; a macvlan endpoint none.
    eps.append(_ep(bridge, ctrs[0], "172.17.0.2"))
    eps.append(_ep(mac, ctrs[1], "192.168.5.9"))
    last = check()
    assert [n.name for n in last.networks] == ["bridge", "front", "back"]
    assert len(last.endpoints) == 4

    # Published ports and a legacy link on the default bridge.
    port = PortMapping("0.0.0.0", 8080, 80, "tcp")
    pub = _ctr("pub", ports=(port,), expose=(Exposed(80, "tcp"),))
    linker = _ctr("linker", links=(("pub", "db"),))
    ctrs += [pub, linker]
    eps += [_ep(bridge, pub, "172.17.0.3"), _ep(bridge, linker, "172.17.0.4")]
    last = check()
    assert [(p.container_ip, p.mapping.host_port) for p in last.ports] == [("172.17.0.3", 8080)]
    assert [(lk.parent_ip, lk.child_ip, lk.port) for lk in last.links] == [
        ("172.17.0.4", "172.17.0.3", 80)
    ]

    # A changed record in the middle, a removal, a network replaced: passes over everything.
    ctrs[0] = dataclasses.replace(ctrs[0], ports=(dataclasses.replace(port, host_port=8081),))
    check()
    eps = [e for e in eps if e.ip != "10.1.0.11"]
    check()
    nets[1] = dataclasses.replace(front, options=frozen({"com.docker.network.bridge.enable_icc":
                                                         "false"}))  # fmt: skip
    last = check()
    assert not next(n for n in last.networks if n.name == "front").icc
    # ...after which extending works again, sharing the kept records.
    c = _ctr("late")
    ctrs.append(c)
    eps.append(_ep(back, c, "10.2.0.5"))
    again = check()
    assert again.networks is last.networks and again.endpoints[:-1] == last.endpoints


def test_a_record_replaced_by_an_equal_copy_or_a_changed_one_reaches_the_model():
    """The identity-cache bug of issue 17: a network option changed -- here by a new record,
    as records are immutable -- must reach the next model, whoever holds the old object."""
    bridge = _net("bridge", "172.17.0.0/16", predefined=True)
    c = _ctr("web")
    eps = [_ep(bridge, c, "172.17.0.2")]
    modeler = Modeler()
    first = modeler.model(View([bridge], [c], eps))
    assert first.networks[0].icc
    off = dataclasses.replace(bridge, options=frozen({"com.docker.network.bridge.enable_icc":
                                                      "false"}))  # fmt: skip
    second = modeler.model(View([off], [c], eps))
    assert not second.networks[0].icc
    copy = Network.from_doc(off.to_doc())  # equal, another object: extends as the same
    assert modeler.model(View([copy], [c], eps)) == second


def test_a_kept_dual_stack_model_equals_a_fresh_one():
    """IPv6: an endpoint's IPv6 address right after its IPv4 one; the ports on [::] follow a
    sandbox's gateway endpoint when a connect moves it, as the IPv4 ones do."""
    pool6 = ipam.plan_pool(subnet="fd00:1::/64", gateway=None, ip_range=None, aux_addresses=None,
                           taken=[], version=6)  # fmt: skip
    dual = dataclasses.replace(_net("dual", "10.1.0.0/24"), pool6=pool6)
    four = _net("four", "10.2.0.0/24")
    nets, ctrs, eps = [dual, four], [], []
    modeler = Modeler()

    def check() -> R.Model:
        got = modeler.model(View(nets, ctrs, eps))
        assert got == fresh(nets, ctrs, eps)
        return got

    ports = (PortMapping("0.0.0.0", 8080, 80, "tcp"), PortMapping("::", 8080, 80, "tcp"))
    pub = _ctr("pub", ports=ports)
    ctrs.append(pub)
    eps.append(_ep(four, pub, "10.2.0.2"))
    last = check()
    assert last.v6 is not None and last.v6.ports == []  # its gateway endpoint has no IPv6
    eps.append(dataclasses.replace(_ep(dual, pub, "10.1.0.2"), ip6="fd00:1::2"))
    last = check()  # "dual" sorts first: the gateway endpoint now, with an IPv6 address
    assert [(p.container_ip, p.mapping.host_ip) for p in last.v6.ports] == [("fd00:1::2", "::")]
    assert [(e.ip, e.family) for e in last.endpoints] == [
        ("10.2.0.2", 4), ("10.1.0.2", 4), ("fd00:1::2", 6)]  # fmt: skip
    c = _ctr("late")
    ctrs.append(c)
    eps.append(dataclasses.replace(_ep(dual, c, "10.1.0.3"), ip6="fd00:1::3"))
    again = check()
    assert again.v6.networks is last.v6.networks and again.endpoints[-1].ip == "fd00:1::3"
