"""The one module that touches aiortc/aioice internals (aiortc==1.16.0, aioice 0.13 pinned).

Everything here is checked by tests/contract/test_aiortc_contract.py, so an upgrade that moves
what we depend on fails there, loudly, not in production.
"""

from __future__ import annotations

import aioice.ice

_ice_hosts: tuple[str, ...] = ()
_original_get_host_addresses = aioice.ice.get_host_addresses


def _get_host_addresses(use_ipv4: bool, use_ipv6: bool) -> list[str]:
    if _ice_hosts:
        return list(_ice_hosts)
    return _original_get_host_addresses(use_ipv4, use_ipv6)


def set_ice_hosts(hosts: tuple[str, ...] | list[str]) -> None:
    """Addresses ICE offers as host candidates, replacing what aioice gathers.

    aioice drops 127.0.0.1 when it enumerates interfaces, so on loopback nothing would connect.
    Empty restores aioice's own gathering. Process-wide, as aioice's gathering is.
    """
    global _ice_hosts
    _ice_hosts = tuple(hosts)
    aioice.ice.get_host_addresses = _get_host_addresses
