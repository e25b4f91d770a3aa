"""The embedded resolver at 127.0.0.11 (Docker's service discovery), without a daemon.

* :mod:`.records` -- which names each sandbox sees (pure).
* :mod:`.wire` -- the DNS wire format: a small fast path for the common answers, dnspython for
  everything else.
* :mod:`.redirect` -- the rules inside a sandbox that send 127.0.0.11:53 to the resolver's
  ports (pure rendering plus one atomic apply).
* :mod:`.server` -- the ``lowbridge-dns`` process: one per host, started on demand, exits when no
  sandbox needs it.
* :mod:`.control` -- how lowbridge commands start it and hand it sockets.

Design and measurements: shared/reference/dns-notes.md; Docker's behaviour: docker-mechanics.md 3.
"""

# Docker's embedded resolver address and answer TTL (moby libnetwork resolver.go respTTL).
ADDRESS = "127.0.0.11"
TTL = 600
