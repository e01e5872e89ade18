"""The driver side of the world API: answers task instances' world and local requests.

The simulator and the coordinator both serve task code through
:class:`~shoal._world.service.WorldService`; the task side (:mod:`shoal._runtime`)
only ever talks to it over a channel.
"""
