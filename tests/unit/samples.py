"""Sample records shared by the unit tests."""

from lowbridge import ipam
from lowbridge.models import Container, Endpoint, Network
from lowbridge.ports import Exposed, PortMapping


def records(net_id: str = "n" * 64, ctr_id: str = "c" * 64):
    """A bridge network 10.1.0.0/24, a container "web" and its endpoint at 10.1.0.2."""
    pool = ipam.plan_pool(
        subnet="10.1.0.0/24", gateway=None, ip_range=None, aux_addresses=None, taken=[]
    )
    net = Network(id=net_id, name="mynet", driver="bridge", pool=pool, device="lb-nnn")
    ctr = Container(id=ctr_id, name="web", netns="/run/netns/web", command=("sleep", "9"),
                    ports=(PortMapping("0.0.0.0", 8080, 80, "tcp"),),
                    expose=(Exposed(53, "udp"),))  # fmt: skip
    ep = Endpoint(
        id="e" * 64,
        network_id=net.id,
        container_id=ctr.id,
        ifname="eth0",
        ip="10.1.0.2",
        prefixlen=24,
        gateway="10.1.0.1",
        mac="02:42:0a:01:00:02",
        host_ifname="lbvx",
    )
    return net, ctr, ep
