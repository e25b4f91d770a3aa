"""Other runtimes call lowbridge: the same controller behind their plugin protocols.

    cni     ``lowbridge-cni``: a CNI plugin (spec 1.0/1.1) -- Podman, containerd, CRI-O
    docker  ``lowbridge plugin docker``: libnetwork's remote network driver -- dockerd

Each only translates: a runtime's call becomes a controller verb (``container create`` with an
adopted namespace, ``network connect``, ``rm``), its answer is rendered from the records.  No
attach, IPAM or firewall code of their own.
"""
