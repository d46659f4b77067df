"""``[core] hostname_callable`` for the local topology: one readable host name per service.

In Docker every container has its own host name, so a task instance's ``hostname`` tells which
container ran it. The local topology runs every service on one machine; it points
``AIRFLOW__CORE__HOSTNAME_CALLABLE`` here and gives each process ``GIP_TOPOLOGY_HOSTNAME``
(``worker-1``, ``triggerer``, ...), so tests can tell the same thing.
"""

from __future__ import annotations

import os
import socket


def get_hostname() -> str:
    """Return the service name set by the topology, else the machine's FQDN (Airflow's default)."""
    return os.environ.get("GIP_TOPOLOGY_HOSTNAME") or socket.getfqdn()
