"""The ``trio`` transport: HTTP/1.1 on Trio sockets, with its own parser and connection pool.

``_wire`` owns the bytes of one connection (reading heads and bodies, writing requests);
``_transport`` owns connections per origin, requests and responses.  Redirects are followed
by the transports' shared loop (``transports/_redirects.py``).
"""

from ._transport import TrioTransport

__all__ = ["TrioTransport"]
