"""Serving a store over HTTP: the content app, an ASGI 3 application, and a way to run it.

::

    from triofetch import open_store
    from triofetch.serve import make_app, serve_app

    async with await open_store(None, root="/srv/triofetch", create=False, readonly=True) as store:
        await serve_app(make_app(store), host="127.0.0.1", port=8080)

:func:`make_app` returns a plain ASGI 3 application (no framework), so a Trio program can
also mount it in its own ASGI server.  :func:`serve_app` runs it on hypercorn's Trio worker
(``pip install 'triofetch[serve]'``); ``triofetch serve`` is that, from the command line.

What is served (see ``docs/serve.rst``):

- ``/`` an index of the repositories; ``/NAME/`` the latest complete version of NAME,
  ``/NAME/versions/`` its complete versions, ``/NAME/versions/N/`` version N;
- in a version: each file at its relative path, a generated ``PULP_MANIFEST`` listing
  exactly that version (``relative_path,sha256,size``), an HTML index page at every
  directory level;
- ``GET`` and ``HEAD``; ``ETag`` (the quoted sha256), ``If-None-Match`` (304) and
  ``If-Match`` (412 for another tag); one byte range (206, or 416 when unsatisfiable;
  several ranges get the whole file, 200); ``Content-Length``; a ``Content-Type`` by
  extension;
- anything else is 404; a target that tries to leave the tree (``..``, encoded slashes or
  dots, NUL, backslashes, empty segments, absolute URLs) is 400; a symbolic link in the
  storage is never followed.

Stored files are read in worker threads (``trio.to_thread.run_sync`` under the app's
``file_limiter``): a first body message of 256 KiB, then pieces doubling up to 4 MiB, the
next piece read while the one before is sent, small files kept in memory once read; the
Trio loop never blocks on the disk nor on the database (the :class:`Store` runs
its queries in worker threads).  hypercorn offers no zero-copy (``sendfile``) extension, so
the bytes pass through Python.

Files recorded but not stored (units created ``on_demand`` or ``streamed``) are fetched
from their remote on request by :mod:`triofetch.serve._ondemand`: one upstream download
per file shared by every request for it, the bytes streamed as they arrive, the last byte
held until size and digests are checked, then (``on_demand``, on a writable store) the
file adopted into the storage and attached to its unit, all or nothing.

This package owns the HTTP face of the store; it reads the store through its public API
(:meth:`Store.latest_version`, :meth:`Store.get_version`, :meth:`Store.list_units`,
:meth:`Store.versions`, :meth:`Store.repositories`, :meth:`Store.missing_artifacts`) and
the storage's ``artifacts`` directory; its one write is attaching a fetched on-demand file
(:meth:`ArtifactStorage.adopt`, :meth:`Store.fill_artifacts`).
"""

from __future__ import annotations

from .._public import publish
from ._app import DEFAULT_CHUNK_SIZE, DEFAULT_MEMORY_CACHE, ContentApp, make_app
from ._ondemand import OnDemandFiles
from ._server import INSTALL_HINT, serve_app

__all__ = [
    "DEFAULT_CHUNK_SIZE",
    "DEFAULT_MEMORY_CACHE",
    "INSTALL_HINT",
    "ContentApp",
    "OnDemandFiles",
    "make_app",
    "serve_app",
]

publish(__name__, globals())
