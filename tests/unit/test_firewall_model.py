"""The firewall's view of the store (lowbridge.firewall.model): kept between calls, the same
answer as a fresh pass whatever the run of changes."""

from __future__ import annotations

import dataclasses

from lowbridge import firewall, ipam
from lowbridge.firewall import rules as R
from lowbridge.models import Container, Endpoint, Network


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
    """model() without what it kept."""
    kept = list(firewall._kept)
    firewall._kept[:] = [(), (), (), None]
    try:
        return firewall.model(nets, ctrs, eps)
    finally:
        firewall._kept[:] = kept


def test_a_kept_model_equals_a_fresh_one_through_a_run_of_changes():
    bridge = _net("bridge", "172.17.0.0/16", predefined=True)
    front, back = _net("front", "10.1.0.0/24"), _net("back", "10.2.0.0/24")
    mac = _net("lan", "192.168.5.0/24", driver="macvlan")
    nets, ctrs, eps = [bridge, front, back, mac], [], []

    def check() -> R.Model:
        got = firewall.model(nets, ctrs, eps)
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
    port = {"host_ip": "0.0.0.0", "host_port": 8080, "container_port": 80, "proto": "tcp"}
    pub = _ctr("pub", ports=[port], expose=["80/tcp"])
    linker = _ctr("linker", links=[["pub", "db"]])
    ctrs += [pub, linker]
    eps += [_ep(bridge, pub, "172.17.0.3"), _ep(bridge, linker, "172.17.0.4")]
    last = check()
    assert [(p.container_ip, p.mapping.host_port) for p in last.ports] == [("172.17.0.3", 8080)]
    assert [(lk.parent_ip, lk.child_ip, lk.port) for lk in last.links] == [
        ("172.17.0.4", "172.17.0.3", 80)
    ]

    # A changed record in the middle, a removal, a network replaced: passes over everything.
    ctrs[0] = dataclasses.replace(ctrs[0], ports=[{**port, "host_port": 8081}])
    check()
    eps = [e for e in eps if e.ip != "10.1.0.11"]
    check()
    nets[1] = dataclasses.replace(front, options={"com.docker.network.bridge.enable_icc": "false"})
    last = check()
    assert not next(n for n in last.networks if n.name == "front").icc
    # ...after which extending works again, sharing the kept records.
    c = _ctr("late")
    ctrs.append(c)
    eps.append(_ep(back, c, "10.2.0.5"))
    again = check()
    assert again.networks is last.networks and again.endpoints[:-1] == last.endpoints
