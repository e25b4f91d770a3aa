"""lowbridge: Docker's network drivers built directly with pyroute2, without a daemon.

Layers (each imports only those below it):

    cli          parse, call the controller, render (output)
    controller   locking, reconcile, validate-then-apply with an undo stack (txn), persist last
    drivers      bridge / host / none behind one protocol (drivers.base)
    ipam, names  pure policy: addresses and kernel names
    netlink      the kernel layer, the only module that imports pyroute2
    netns        namespaces as files, per-namespace work in throwaway threads
    store        the state store interface and its SQLite implementation
"""

__version__ = "0.1.0"
