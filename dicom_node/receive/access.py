"""Who may open an association: the source-address allow-list.

The calling-AE allow-list and the called-AE check are pynetdicom's
(``require_calling_aet``, ``require_called_aet``) and answer with an
A-ASSOCIATE-RJ. An AE title is only a name the sender chooses, so the node
can also restrict the source addresses (CIDR networks): a connection from
elsewhere is closed before a single PDU is read.

References
----------
DICOM PS3.8 7.1.1 (A-ASSOCIATE: calling and called AE title);
PS3.15 Annex B (secure transport: TLS authenticates the peer, an AE title does not).
"""

from __future__ import annotations

import ipaddress
from collections.abc import Sequence

from dicom_node.errors import ConfigurationError

_Network = ipaddress.IPv4Network | ipaddress.IPv6Network


class AddressAllowList:
    """Source networks allowed to connect; empty means every address.

    Parameters
    ----------
    networks : sequence of str
        Networks in CIDR notation (``"10.20.0.0/16"``, ``"2001:db8::/32"``) or
        single addresses.

    Raises
    ------
    ConfigurationError
        If an entry is not an IP network.
    """

    def __init__(self, networks: Sequence[str]) -> None:
        parsed: list[_Network] = []
        for entry in networks:
            try:
                parsed.append(ipaddress.ip_network(entry.strip(), strict=False))
            except ValueError as err:
                raise ConfigurationError(f"{entry!r} is not an IP network: {err}") from err
        self.networks: tuple[_Network, ...] = tuple(parsed)

    def __bool__(self) -> bool:
        return bool(self.networks)

    def allows(self, host: str) -> bool:
        """Return True if ``host`` (an IP address string) is in an allowed network.

        IPv4 addresses mapped into IPv6 (``::ffff:10.0.0.1``, from a
        dual-stack listener) are compared as IPv4. Anything that is not an IP
        address is refused when the list is not empty.
        """
        if not self.networks:
            return True
        try:
            address = ipaddress.ip_address(host.split("%", 1)[0])
        except ValueError:
            return False
        if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
            address = address.ipv4_mapped
        return any(address in network for network in self.networks)
