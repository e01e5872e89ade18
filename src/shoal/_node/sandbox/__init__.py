"""Sandboxed executors for the node agent.

``bwrap`` (bubblewrap: :mod:`.bwrap`) with limits through cgroups (:mod:`.cgroups`);
OCI executors live in :mod:`.oci`. Each registers itself in
:mod:`shoal._node.executors`.
"""
