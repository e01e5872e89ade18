"""Executors: how task instances run, with what restrictions.

Two kinds of backend live here, because two kinds of caller run tasks.

**Node-level** (the node agent): one task process per instance. An
:class:`~shoal._exec.base.Executor` has ``start(spec, socket_path, token)``, which
starts ``python -m shoal._node.task_runner`` for one
:class:`~shoal._exec.base.InstanceSpec` and returns a handle
(:class:`~shoal._exec.base.ProcessHandle` and its subclasses: ``poll``, ``wait``,
``kill``, ``failure_reason``). Backends, selected by ``executor = "..."`` in node.toml
(:mod:`~shoal._exec.registry`):

- ``process`` (alias ``subprocess``; :mod:`~shoal._exec.process`): a plain child
  process, preset ``TRUSTED``;
- ``bwrap`` (:mod:`~shoal._exec.bwrap`, limits through :mod:`~shoal._exec.cgroups`,
  availability from :mod:`~shoal._exec.probe`): bubblewrap, preset ``SANDBOX``;
- ``podman`` / ``docker`` (:mod:`~shoal._exec.oci`): a container, preset ``SANDBOX``;
- ``auto``: ``bwrap`` where it works, else ``process`` with a warning.

**Pool-level** (the simulator): a fixed pool of workers that each run many instances of
any virtual node, one after another. A :class:`~shoal._exec.jobs.SimExecutor` has
``submit(job)``, ``poll(timeout)``, ``cancel(instance_id)``, ``busy()`` and
``close()``, and reports through callbacks. Backends (``--executor``):

- ``process`` (:mod:`~shoal._exec.pool`, workers run :mod:`~shoal._exec.pool_worker`);
- ``bwrap``: the same pool, each worker under bubblewrap
  (:mod:`~shoal._exec.pool_bwrap`), preset ``SIM_POOL``;
- ``inline`` (:mod:`~shoal._exec.inline`): this process, one instance after another.

Why they differ: on a node an instance is a real task with its own data, limits and
token, so it gets a process of its own. In the simulator the virtual nodes are data,
not processes: a process per instance costs milliseconds and tens of MB, which
thousands of virtual nodes per iteration cannot afford, so a few workers run every
instance and import each module once.

**Restrictions** (:mod:`~shoal._exec.restrictions`) are one frozen value for both:
network, host files (or only binds), memory, processes, CPU quota, CPU time and wall
time, with named presets (``TRUSTED``, ``SANDBOX``, ``SIM_POOL``). The bwrap and OCI
command lines are built from it, and every executor says which restrictions it enforces
in its ``enforces`` attribute.

What a sandboxed simulator worker sees differs from a node's sandbox in one way: the
pool groups workers by the set of datasets a module declares, so a task sees only
datasets its module declared, but of each such dataset it sees every virtual node's
share (all shares live on one machine, and one worker runs instances of every node).
A node's task sees only its own node's data. Per-instance limits (memory, processes,
CPU) are not applied in the pool: a worker runs many instances; the engine's timeouts
stop a hung instance by killing its worker.

This package imports only ``_errors``, ``_codec``, ``_wire``, ``_runtime`` and
``_world``; ``_node`` and ``_sim`` import it.
"""
