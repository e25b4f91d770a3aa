"""What marks a lab's own networks and sandboxes: two labels (no schema needed to read them)."""

from __future__ import annotations

from lowbridge.models import Container, Network, View

LAB = "lowbridge.lab"  # the lab's name
SPEC = "lowbridge.lab.spec"  # the digest of the spec the entry was made from (lab.diff)


def owned(view: View, lab: str) -> tuple[list[Network], list[Container]]:
    """The lab's networks and sandboxes in the store."""
    nets = [n for n in view.networks if n.labels.get(LAB) == lab]
    boxes = [c for c in view.containers if c.labels.get(LAB) == lab]
    return nets, boxes
