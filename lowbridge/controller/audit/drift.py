"""A difference between the records and the host, and how ``gc`` mends it."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

# The order gc mends in: leftovers first (they may hold names and addresses), then devices,
# what hangs off them, the firewall and the resolver last (they follow the rest).
SETTLE, REMOVE, DEVICE, ENDPOINT, SANDBOX, FIREWALL, RESOLVER = range(7)


@dataclass(frozen=True)
class Drift:
    """One difference (see the module docstring); ``mend`` is what gc does about it."""

    what: str
    where: str
    expected: str
    found: str
    fix: str
    rank: int = SANDBOX
    mend: Callable[[], object] | None = field(default=None, compare=False, repr=False)
    # What the mend acts on, when several differences share one mend (an endpoint made
    # again, the rules rewritten): it runs once for all of them.
    target: object = field(default=None, compare=False, repr=False)

    def line(self) -> str:
        return f"{self.what} {self.where}: expected {self.expected}, found {self.found}"

    def doc(self) -> dict[str, str]:
        return {k: getattr(self, k) for k in ("what", "where", "expected", "found", "fix")}
