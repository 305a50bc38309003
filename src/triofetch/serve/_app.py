"""The content app: :class:`ContentApp`, a plain ASGI 3 application over a :class:`Store`.

Owns the routes (``/``, ``/NAME/``, ``/NAME/versions/``, ``/NAME/versions/N/``), which
version a request reads and the caches of those lookups, and the responses: files with
their validators and ranges, the generated manifests, index pages, redirects and errors,
and one access-log line per request.  The rules it follows live below it: reading the target
(``_urls``), conditional and range requests (``_http``), the version's table and pages
(``_index``), opening stored files (``_files``).  It must not write to the store.
"""

from __future__ import annotations

import logging
import os
import sys
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Iterable, MutableMapping
from dataclasses import replace
from functools import partial
from pathlib import Path
from typing import Any

import trio

from ..downloader import Downloader
from ..errors import (
    InvalidInput,
    RepositoryNotFound,
    StorageWriteError,
    StoreError,
    VersionNotFound,
)
from ..manifest import MANIFEST_NAME
from ..store import ArtifactRecord, Store, VersionHandle
from ._files import Damaged, Refused, open_stored, read_at
from ._http import (
    CutShort,
    RangeResult,
    content_type,
    etag_of,
    if_match,
    if_range_matches,
    none_match,
    parse_range,
)
from ._index import FileEntry, Listing, VersionIndex, render_index
from ._ondemand import OnDemandFiles, Refusal, short_of_descriptors
from ._urls import BadTarget, parse_target

__all__ = ["DEFAULT_CHUNK_SIZE", "DEFAULT_MEMORY_CACHE", "ContentApp", "make_app"]

log = logging.getLogger("triofetch.serve")

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]

#: the bytes of a stored file read (in a worker thread) and sent per body message
DEFAULT_CHUNK_SIZE = 256 * 1024
#: the pieces of a large file grow up to this many chunks (4 MiB by default): measured on
#: 4 x 256 MiB, 16 parallel clients, 256 KiB pieces gave 734 MB/s, 1 MiB 1,052, 4 MiB 1,317
_GROWTH = 16
#: bytes of small stored files kept in memory by default (see make_app)
DEFAULT_MEMORY_CACHE = 64 * 1024 * 1024
#: what an entry of the memory cache costs beyond its key and its bytes objects (its slot
#: in the dict and its node in the order of use), about
_CACHE_ENTRY = 100


def _cost(sha256: str, data: bytes) -> int:
    """The memory a small file kept in the cache takes: its bytes, and its key, the bytes
    object and the cache's own entry, which are most of it for a file of a few bytes (only
    the bytes counted, the 64 MiB held 20 times as much of files of 10 bytes)."""
    return sys.getsizeof(data) + sys.getsizeof(sha256) + _CACHE_ENTRY


#: the longest version number read from a URL (the database's integers have 18 digits)
_MAX_NUMBER_DIGITS = 18
#: at most this many names (repositories, or repository and version) remembered by the
#: lookup caches; past it they start again (requests for made-up names cannot grow them)
_MAX_LOOKUPS = 1024

_HTML = b"text/html; charset=utf-8"
_TEXT = b"text/plain; charset=utf-8"
_REASONS = {
    301: "Moved Permanently",
    304: "Not Modified",
    400: "Bad Request",
    404: "Not Found",
    405: "Method Not Allowed",
    412: "Precondition Failed",
    416: "Range Not Satisfiable",
    500: "Internal Server Error",
    502: "Bad Gateway",
    503: "Service Unavailable",
}


#: the headers of a 503 for want of file descriptors: try again in a second
_RETRY = ((b"retry-after", b"1"),)


class _NotFound(Exception):
    """Answer 404 (raised by the lookups)."""


class _VersionGone(Exception):
    """The version a request was served from was removed (prune and gc) while the app still
    remembered it; raised before anything was sent, its lookups forgotten already."""

    def __init__(self, handle: VersionHandle) -> None:
        super().__init__(
            f"version {handle.number} of {handle.repository} was removed (prune and gc): "
            "it is no longer served"
        )
        self.handle = handle


class Exchange:
    """One request and what has been answered so far (for the access log).

    ``method``, ``raw_path`` (the target as sent, without the query), ``query`` (the
    query string as sent, without its ``?``), ``headers``
    (lower-case names, values decoded as Latin-1; a repeated header's values joined with
    ``", "``) and ``http_version`` are read from the ASGI scope; :meth:`start` and
    :meth:`body` send the response and count it.
    """

    __slots__ = (
        "_send",
        "headers",
        "http_version",
        "method",
        "mount",
        "query",
        "raw_path",
        "receive",
        "sent",
        "status",
    )

    def __init__(self, scope: Scope, receive: Receive, send: Send) -> None:
        self.method: str = scope.get("method", "GET")
        #: "1.0", "1.1" or "2" (a body without a length is read to the close under "1.0")
        self.http_version: str = str(scope.get("http_version", "1.1"))
        raw = scope.get("raw_path")
        if not isinstance(raw, bytes | bytearray):
            raw = str(scope.get("path", "/")).encode("utf-8", "surrogateescape")
        root = str(scope.get("root_path", "")).encode("utf-8", "surrogateescape")
        #: the prefix the app is mounted under (b"": none), for the URLs it sends back
        self.mount = b""
        if root and raw.startswith(root) and raw[len(root) : len(root) + 1] in (b"", b"/"):
            raw = raw[len(root) :] or b"/"  # mounted under a prefix
            self.mount = root
        self.raw_path = bytes(raw).partition(b"?")[0]
        query = scope.get("query_string", b"")
        self.query = bytes(query) if isinstance(query, bytes | bytearray) else b""
        headers: dict[str, str] = {}
        for name, value in scope.get("headers", ()):
            key = bytes(name).decode("latin-1").lower()
            text = bytes(value).decode("latin-1")
            headers[key] = f"{headers[key]}, {text}" if key in headers else text
        self.headers = headers
        self.receive = receive
        self._send = send
        self.status = 0
        self.sent = 0

    @property
    def head(self) -> bool:
        return self.method == "HEAD"

    async def start(self, status: int, headers: Iterable[tuple[bytes, bytes]]) -> None:
        """Send the status line and headers."""
        self.status = status
        await self._send(
            {"type": "http.response.start", "status": status, "headers": list(headers)}
        )

    async def body(self, data: bytes, *, more: bool = False) -> None:
        """Send a piece of the body (nothing of it for HEAD); *more*: not the last."""
        if self.head:
            data = b""
        self.sent += len(data)
        await self._send({"type": "http.response.body", "body": data, "more_body": more})

    async def simple(
        self,
        status: int,
        body: bytes,
        content_type: bytes = _TEXT,
        headers: Iterable[tuple[bytes, bytes]] = (),
    ) -> None:
        """A whole response of *body*."""
        await self.start(
            status,
            [
                (b"content-type", content_type),
                (b"content-length", str(len(body)).encode()),
                *headers,
            ],
        )
        await self.body(body)

    async def error(
        self, status: int, detail: str = "", headers: Iterable[tuple[bytes, bytes]] = ()
    ) -> None:
        """A short plain-text error: ``404 Not Found`` and *detail*, if any."""
        text = f"{status} {_REASONS.get(status, '')}\n" + (f"{detail}\n" if detail else "")
        extra = [(b"allow", b"GET, HEAD")] if status == 405 else []
        await self.simple(status, text.encode("utf-8"), headers=[*extra, *headers])

    @property
    def target(self) -> bytes:
        """The target as sent: the path and the query, if any."""
        return self.raw_path + b"?" + self.query if self.query else self.raw_path

    async def redirect(self) -> None:
        """301 to the same path with a ``/`` added (a directory asked without it), the
        query kept."""
        location = self.mount + self.raw_path + b"/" + (b"?" + self.query if self.query else b"")
        await self.simple(301, b"", headers=[(b"location", location)])


async def _watch_disconnect(receive: Receive, scope: trio.CancelScope) -> None:
    """Cancel *scope* when the client goes away (ASGI ``http.disconnect``)."""
    while True:
        message = await receive()
        if message.get("type") == "http.disconnect":
            scope.cancel()
            return


class ContentApp:
    """An ASGI 3 application serving the complete repository versions of a
    :class:`~triofetch.Store`.

    Make one with :func:`make_app`; see :mod:`triofetch.serve` for what it serves where.

    Attributes:
        store (~triofetch.Store): the store served.
        repositories (tuple[str, ...] | None): the repositories served (None: all of the
            store's).
        file_limiter (trio.CapacityLimiter): bounds the worker threads opening and reading
            stored files.
        on_demand (OnDemandFiles): the files of on-demand and streamed units, fetched when
            asked for (its :meth:`~OnDemandFiles.wait_idle` waits until nothing is being
            fetched or stored).
    """

    def __init__(
        self,
        store: Store,
        *,
        repositories: Iterable[str] | None = None,
        refresh: float = 1.0,
        chunk_size: int = DEFAULT_CHUNK_SIZE,
        file_threads: int = 16,
        cached_versions: int = 16,
        memory_cache: int = DEFAULT_MEMORY_CACHE,
        downloader: Downloader | None = None,
    ) -> None:
        if not isinstance(store, Store):
            raise InvalidInput(f"make_app takes a Store, got {store!r}")
        if store.storage is None:
            raise InvalidInput("the store has no artifact storage (open it with root=...)")
        if isinstance(repositories, str):
            raise InvalidInput("repositories must be a collection of names, not one str")
        names = None if repositories is None else sorted(set(repositories))
        for name in names or ():
            if not isinstance(name, str) or not name or "/" in name or name in (".", ".."):
                raise InvalidInput(f"not a repository name that can be served: {name!r}")
        if not isinstance(refresh, int | float) or isinstance(refresh, bool) or refresh < 0:
            raise InvalidInput(f"refresh must be a number of seconds >= 0, got {refresh!r}")
        if downloader is not None and not isinstance(downloader, Downloader):
            raise InvalidInput(f"downloader must be a Downloader, got {downloader!r}")
        for what, value in (
            ("chunk_size", chunk_size),
            ("file_threads", file_threads),
            ("cached_versions", cached_versions),
            ("memory_cache", memory_cache + 1 if isinstance(memory_cache, int) else memory_cache),
        ):
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise InvalidInput(f"{what} must be an integer >= 1, got {value!r}")
        self.store = store
        self.repositories: tuple[str, ...] | None = None if names is None else tuple(names)
        self._allowed = None if names is None else frozenset(names)
        self._refresh = float(refresh)
        self._chunk = chunk_size
        self._artifacts: Path = store.storage.artifacts_dir
        self.file_limiter = trio.CapacityLimiter(file_threads)
        self._max_indexes = cached_versions
        # sha256 -> the bytes of a small stored file (at most one chunk), least recently
        # served first; at most memory_cache bytes in all
        self._memory: OrderedDict[str, bytes] = OrderedDict()
        self._memory_bytes = 0
        self._memory_limit = memory_cache
        self._indexes: OrderedDict[int, VersionIndex] = OrderedDict()
        self._building: dict[int, trio.Event] = {}
        # name -> (expires, found, latest complete version)
        self._latest: dict[str, tuple[float, bool, VersionHandle | None]] = {}
        # (name, number) -> (expires, the complete version, or None)
        self._numbered: dict[tuple[str, int], tuple[float, VersionHandle | None]] = {}
        self.on_demand = OnDemandFiles(
            store, downloader=downloader, limiter=self.file_limiter, chunk_size=chunk_size
        )

    def __repr__(self) -> str:
        return f"<ContentApp {self.store!r}>"

    # -- ASGI ---------------------------------------------------------------------------------

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        kind = scope.get("type")
        if kind == "http":
            await self._http(scope, receive, send)
        elif kind == "lifespan":
            await self._lifespan(receive, send)
        else:  # websocket: not ours
            raise ValueError(f"the content app serves HTTP only, not {kind!r}")

    async def _lifespan(self, receive: Receive, send: Send) -> None:
        # the server's life: the on-demand downloads run in it, not in any request's task
        async with self.on_demand.running():
            while True:
                message = await receive()
                if message.get("type") == "lifespan.startup":
                    await send({"type": "lifespan.startup.complete"})
                elif message.get("type") == "lifespan.shutdown":
                    # (before saying so: the server may exit as soon as it is told)
                    await self.on_demand.finish_storing()
                    await send({"type": "lifespan.shutdown.complete"})
                    return

    async def _http(self, scope: Scope, receive: Receive, send: Send) -> None:
        ex = Exchange(scope, receive, send)
        began = trio.current_time()
        try:
            await self._dispatch(ex)
        except (_NotFound, RepositoryNotFound, VersionNotFound):
            if ex.status == 0:
                await ex.error(404)
        except StoreError as exc:
            if short_of_descriptors(exc):
                # (SQLite could not open a connection: a moment's overload, as for a file)
                log.warning("cannot read the store now: %s", exc)
                if ex.status == 0:
                    await ex.error(503, "too many open files", headers=_RETRY)
            else:
                log.error("cannot read the store: %s", exc)
                if ex.status == 0:
                    await ex.error(500, "the store cannot be read")
        finally:
            if log.isEnabledFor(logging.INFO):
                client = scope.get("client")
                log.info(
                    '%s "%s %s" %d %d %.1fms',
                    client[0] if client else "-",
                    ex.method,
                    ex.target.decode("ascii", "backslashreplace"),
                    ex.status,
                    ex.sent,
                    (trio.current_time() - began) * 1000,
                )

    async def _dispatch(self, ex: Exchange) -> None:
        if ex.method not in ("GET", "HEAD"):
            await ex.error(405)
            return
        try:
            target = parse_target(ex.raw_path)
        except BadTarget as exc:
            await ex.error(400, str(exc))
            return
        segments, directory = target.segments, target.directory
        if not segments:
            await self._root_index(ex)
            return
        name, rest = segments[0], segments[1:]
        if self._allowed is not None and name not in self._allowed:
            raise _NotFound
        latest = await self._latest_version(name)  # (404 for an unknown repository)
        if not rest and not directory:
            await ex.redirect()
            return
        if rest and rest[0] == "versions":
            if len(rest) == 1:
                if not directory:
                    await ex.redirect()
                else:
                    await self._versions_index(ex, name)
                return
            number = _number(rest[1])
            if number is not None:
                handle = await self._version(name, number)
                if handle is not None:
                    if len(rest) == 2 and not directory:
                        await ex.redirect()
                    else:
                        try:
                            await self._in_version(ex, handle, rest[2:], directory, latest=False)
                        except _VersionGone as gone:
                            await ex.error(404, str(gone))
                    return
            # not a version: a path of the latest version that starts with "versions/"
        if latest is None:
            if rest:
                raise _NotFound
            if await self._page_conditions(ex):
                return
            page = render_index(
                f"/{name}/",
                [Listing("versions", True)],
                parent=True,
                note=f"repository {name} has no complete version yet",
            )
            await ex.simple(200, page, _HTML)
            return
        try:
            await self._in_version(ex, latest, rest, directory, latest=True)
        except _VersionGone as gone:
            # the latest version the app remembered is gone: a newer one took its place
            # (answered from it), or none is left
            latest = await self._latest_version(name)
            if latest is None or latest.id == gone.handle.id:
                await ex.error(404, str(gone))
                return
            try:
                await self._in_version(ex, latest, rest, directory, latest=True)
            except _VersionGone as again:  # (gone too, already: say so, once)
                await ex.error(404, str(again))

    # -- lookups (cached) ---------------------------------------------------------------------

    async def _latest_version(self, name: str) -> VersionHandle | None:
        """The latest complete version of *name* (None: none yet); _NotFound: no such
        repository.  Remembered for ``refresh`` seconds."""
        now = trio.current_time()
        hit = self._latest.get(name)
        if hit is None or hit[0] <= now:
            try:
                handle = await self.store.latest_version(name)
                found = True
            except (RepositoryNotFound, InvalidInput):
                handle, found = None, False
            if len(self._latest) >= _MAX_LOOKUPS:
                self._latest.clear()
            hit = self._latest[name] = (trio.current_time() + self._refresh, found, handle)
        if not hit[1]:
            raise _NotFound
        return hit[2]

    async def _version(self, name: str, number: int) -> VersionHandle | None:
        """Complete version *number* of *name*, or None (no such version, or incomplete)."""
        key = (name, number)
        hit = self._numbered.get(key)
        if hit is None or hit[0] <= trio.current_time():
            try:
                handle: VersionHandle | None = await self.store.get_version(name, number)
            except (RepositoryNotFound, InvalidInput):
                raise _NotFound from None
            except VersionNotFound:
                handle = None
            if handle is not None and not handle.complete:
                handle = None
            if len(self._numbered) >= _MAX_LOOKUPS:
                self._numbered.clear()
            hit = self._numbered[key] = (trio.current_time() + self._refresh, handle)
        return hit[1]

    async def _index(self, handle: VersionHandle) -> VersionIndex:
        """The table of a complete version: built once (one query, then a worker thread),
        shared by concurrent requests, the latest ``cached_versions`` kept."""
        while True:
            index = self._indexes.get(handle.id)
            if index is not None:
                self._indexes.move_to_end(handle.id)
                return index
            building = self._building.get(handle.id)
            if building is None:
                break
            await building.wait()  # then look again (built, or its builder failed)
        done = self._building[handle.id] = trio.Event()
        try:
            units = await self.store.list_units(handle.repository, handle.number)
            index = await trio.to_thread.run_sync(
                VersionIndex.build, handle.repository, handle.number, units
            )
            self._indexes[handle.id] = index
            while len(self._indexes) > self._max_indexes:
                self._indexes.popitem(last=False)
        finally:
            del self._building[handle.id]
            done.set()
        return index

    async def _removed(self, handle: VersionHandle) -> bool:
        """Whether the version *handle* names is gone from the store (pruned, its files
        collected); if so, the lookups and the table that still had it are forgotten, so
        that the next request reads the store."""
        try:
            current = await self.store.get_version(handle.repository, handle.number)
        except (RepositoryNotFound, VersionNotFound):
            current = None
        if current is not None and current.id == handle.id:
            return False
        self._indexes.pop(handle.id, None)
        self._numbered.pop((handle.repository, handle.number), None)
        latest = self._latest.get(handle.repository)
        if latest is not None and latest[2] is not None and latest[2].id == handle.id:
            del self._latest[handle.repository]
        return True

    # -- pages --------------------------------------------------------------------------------

    async def _root_index(self, ex: Exchange) -> None:
        if await self._page_conditions(ex):
            return
        names = self.repositories
        if names is None:
            names = tuple(await self.store.repositories())
        rows = [Listing(n, True) for n in names if "/" not in n and n not in (".", "..")]
        await ex.simple(200, render_index("/", rows, parent=False), _HTML)

    async def _versions_index(self, ex: Exchange, name: str) -> None:
        if await self._page_conditions(ex):
            return
        versions = await self.store.versions(name)
        rows = [
            Listing(
                str(v.number),
                True,
                note=f"{v.units} units"
                + ("" if v.created is None else f", made {v.created:%Y-%m-%d %H:%M} UTC"),
            )
            for v in versions
            if v.complete
        ]
        page = render_index(f"/{name}/versions/", rows, parent=True)
        await ex.simple(200, page, _HTML)

    async def _in_version(
        self,
        ex: Exchange,
        handle: VersionHandle,
        segments: tuple[str, ...],
        directory: bool,
        *,
        latest: bool,
    ) -> None:
        index = await self._index(handle)
        path = "/".join(segments)
        if directory:
            children = index.dirs.get(path)
            if children is None:
                raise _NotFound
            await self._directory(ex, index, path, children, latest=latest)
            return
        if path == MANIFEST_NAME:
            data, sha = await _manifest(index)
            await self._send_bytes(ex, data, sha, _TEXT)
            return
        entry = index.files.get(path)
        if entry is not None:
            if entry.stored:
                await self._send_stored(ex, handle, entry)
            else:
                await self._serve_unstored(ex, handle, index, entry)
            return
        if path in index.dirs:
            await ex.redirect()
            return
        raise _NotFound

    async def _directory(
        self,
        ex: Exchange,
        index: VersionIndex,
        path: str,
        children: dict[str, bool],
        *,
        latest: bool,
    ) -> None:
        if await self._page_conditions(ex):
            return
        rows: list[Listing] = []
        # directories first, then files, each by name
        for child, is_dir in sorted(children.items(), key=lambda kv: (not kv[1], kv[0])):
            if latest and not path and child == "versions":
                # /NAME/versions is the index of every version, listed below: a row for the
                # content's own "versions" (directory or file) would lead there too (its
                # files are still served by their URL; it is listed under /NAME/versions/N/)
                continue
            full = f"{path}/{child}" if path else child
            if is_dir:
                rows.append(Listing(child, True))
                continue
            if not path and child == MANIFEST_NAME:
                continue  # the generated one is served there
            entry = index.files.get(full)
            if entry is None:
                rows.append(Listing(child, False, note="held twice: not served"))
            elif entry.stored:
                rows.append(Listing(child, False, entry.size))
            else:
                kept = (
                    None
                    if entry.key is None
                    else self.on_demand.stored(entry.unit_id, full, entry.key)
                )
                if kept is None:
                    rows.append(Listing(child, False, entry.size, "not stored yet"))
                else:
                    rows.append(Listing(child, False, kept.size))
        if not path:
            rows.append(Listing(MANIFEST_NAME, False, len((await _manifest(index))[0])))
            if latest:
                rows.insert(0, Listing("versions", True, note="every version"))
        where = (
            f"/{index.repository}/" if latest else (f"/{index.repository}/versions/{index.number}/")
        )
        title = where + (f"{path}/" if path else "")
        note = (
            f"version {index.number} of {index.repository}" + (" (the latest)" if latest else "")
            if not path
            else ""
        )
        page = await _render(title, rows, note)
        await ex.simple(200, page, _HTML)

    # -- files --------------------------------------------------------------------------------

    async def _serve_unstored(
        self, ex: Exchange, handle: VersionHandle, index: VersionIndex, entry: FileEntry
    ) -> None:
        """A file of the version whose unit was recorded but whose file is not stored (a
        unit created ``on_demand`` or ``streamed``): fetched from its remote and streamed
        (see :mod:`triofetch.serve._ondemand`).  ``HEAD``, a matching ``If-None-Match`` and
        an ``If-Match`` naming another tag are answered from what the unit declares, without
        fetching; a ``Range`` is not honoured (the whole file, 200).  A file this app has
        stored since the version's table was made is answered from the storage."""
        record = (
            None
            if entry.key is None
            else self.on_demand.stored(entry.unit_id, entry.relative_path, entry.key)
        )
        if record is not None:  # fetched and stored by this app since the table was made
            stored = replace(entry, sha256=record.sha256, size=record.size, stored=True)
            index.files[entry.relative_path] = stored
            await self._send_stored(ex, handle, stored)
            return
        kind = content_type(entry.relative_path.rpartition("/")[2]).encode("ascii")
        headers = [(b"content-type", kind)]
        conditional = "if-none-match" in ex.headers or "if-match" in ex.headers
        if ex.head or conditional:
            # answered without fetching, from what the store says now (one query, which
            # reads the next files ahead; a GET's download asks the same first): another
            # process (a sync, a fill) may have stored the file since the table was made
            declared = await self.on_demand.declared(entry.unit_id, entry.relative_path)
            if declared is None and entry.key is not None:
                record = await self.on_demand.find_stored(
                    entry.key, entry.unit_id, entry.relative_path
                )
                if record is not None:  # stored: answered as a GET would be, from the storage
                    stored = replace(entry, sha256=record.sha256, size=record.size, stored=True)
                    index.files[entry.relative_path] = stored
                    await self._send_stored(ex, handle, stored)
                    return
            if declared is not None:  # what the remote artifact declares
                entry = replace(
                    entry,
                    sha256=entry.sha256 or declared.digests.get("sha256"),
                    size=entry.size if entry.size is not None else declared.size,
                )
        if await self._precondition_failed(ex, entry.sha256):
            return
        if entry.sha256 is not None:
            etag = etag_of(entry.sha256)
            if none_match(ex.headers.get("if-none-match"), etag):
                await ex.start(304, [(b"etag", etag.encode("ascii"))])
                await ex.body(b"")
                return
        if ex.head:
            if entry.sha256 is not None:
                headers.append((b"etag", etag_of(entry.sha256).encode("ascii")))
            if entry.size is not None:
                headers.append((b"content-length", str(entry.size).encode()))
            await ex.start(200, headers)
            await ex.body(b"")
            return
        if entry.key is None:  # (an index made without keys: none of ours)
            await ex.error(404, "not stored")
            return
        outcome: ArtifactRecord | Refusal | str = "gone"
        async with trio.open_nursery() as nursery:
            # a client that goes away stops its own response only: the download goes on
            nursery.start_soon(_watch_disconnect, ex.receive, nursery.cancel_scope)
            outcome = await self.on_demand.serve(
                ex, entry.key, entry.unit_id, entry.relative_path, entry.size, entry.sha256, headers
            )
            nursery.cancel_scope.cancel()
        # (what completes the answer is sent outside the watch, as _stream does)
        if outcome == "finish":
            await ex.body(b"")
        elif isinstance(outcome, Refusal):
            await ex.error(outcome.status, outcome.detail, _RETRY if outcome.status == 503 else ())
        elif isinstance(outcome, ArtifactRecord):
            # stored meanwhile (by an earlier request): from the storage
            record = outcome
            stored = replace(entry, sha256=record.sha256, size=record.size, stored=True)
            index.files[entry.relative_path] = stored
            await self._send_stored(ex, handle, stored)

    async def _precondition_failed(self, ex: Exchange, sha256: str | None) -> bool:
        """Answer ``412 Precondition Failed`` when an ``If-Match`` names another content
        than this one (of this sha256; None: of no known digest, or an index page, which
        has no entity tag: only ``*`` goes on); whether it did.  Checked before anything
        else is (RFC 9110, 13.2.2), once the answer is known to be a 2xx: a 404 or a
        redirect ignores it (13.2.1)."""
        if if_match(ex.headers.get("if-match"), None if sha256 is None else etag_of(sha256)):
            return False
        extra = [] if sha256 is None else [(b"etag", etag_of(sha256).encode("ascii"))]
        await ex.error(412, "If-Match names another content", headers=extra)
        return True

    async def _page_conditions(self, ex: Exchange) -> bool:
        """The conditions of a request for an index page (which has no entity tag),
        answered when they decide it; whether they did: an ``If-Match`` naming a tag is
        ``412``; then ``If-None-Match: *`` is ``304`` (RFC 9110 13.1.2: the page exists),
        a list of tags goes on (none is the page's)."""
        if await self._precondition_failed(ex, None):
            return True
        if none_match(ex.headers.get("if-none-match"), None):
            await ex.start(304, [])
            await ex.body(b"")
            return True
        return False

    def _validators(
        self, ex: Exchange, sha256: str, size: int, kind: bytes
    ) -> tuple[list[tuple[bytes, bytes]], RangeResult | None]:
        """The headers every answer about this content has, and the range to send (None:
        answer 304)."""
        etag = etag_of(sha256)
        headers = [
            (b"content-type", kind),
            (b"etag", etag.encode("ascii")),
            (b"accept-ranges", b"bytes"),
        ]
        if none_match(ex.headers.get("if-none-match"), etag):
            return headers, None
        wanted = ex.headers.get("range")
        if ex.head or wanted is None or not if_range_matches(ex.headers.get("if-range"), etag):
            return headers, parse_range(None, size)
        return headers, parse_range(wanted, size)

    async def _answer_partial(
        self,
        ex: Exchange,
        headers: list[tuple[bytes, bytes]],
        wanted: RangeResult,
        size: int,
    ) -> tuple[int, int, int] | None:
        """Send 304 / 416 when that is the answer (None); else the (status, start, length)
        of the response to send, its headers added to *headers*."""
        if wanted.unsatisfiable:
            await ex.simple(416, b"", headers=[*headers[1:], (b"content-range", _star(size))])
            return None
        if wanted.whole:
            headers.append((b"content-length", str(size).encode()))
            return 200, 0, size
        headers.append((b"content-length", str(wanted.length).encode()))
        headers.append(
            (b"content-range", f"bytes {wanted.start}-{wanted.end}/{size}".encode("ascii"))
        )
        return 206, wanted.start, wanted.length

    async def _send_bytes(self, ex: Exchange, data: bytes, sha256: str, kind: bytes) -> None:
        """Content held in memory (a generated manifest), with the same rules as a file."""
        if await self._precondition_failed(ex, sha256):
            return
        headers, wanted = self._validators(ex, sha256, len(data), kind)
        if wanted is None:
            await ex.start(304, headers[1:])
            await ex.body(b"")
            return
        plan = await self._answer_partial(ex, headers, wanted, len(data))
        if plan is None:
            return
        status, start, length = plan
        await ex.start(status, headers)
        await ex.body(data[start : start + length])

    async def _send_stored(self, ex: Exchange, handle: VersionHandle, entry: FileEntry) -> None:
        sha256, size = entry.sha256, entry.size
        assert sha256 is not None and size is not None
        if await self._precondition_failed(ex, sha256):
            return
        kind = content_type(entry.relative_path.rpartition("/")[2]).encode("ascii")
        headers, wanted = self._validators(ex, sha256, size, kind)
        if wanted is None:
            await ex.start(304, headers[1:])
            await ex.body(b"")
            return
        if wanted.unsatisfiable:
            await self._answer_partial(ex, headers, wanted, size)
            return
        start = 0 if wanted.whole else wanted.start
        length = size if wanted.whole else wanted.length
        kept = self._memory.get(sha256)
        if kept is not None:
            self._memory.move_to_end(sha256)
            plan = await self._answer_partial(ex, headers, wanted, size)
            assert plan is not None
            await ex.start(plan[0], headers)
            await ex.body(kept[start : start + length])
            return
        cache = not ex.head and size <= self._chunk and size <= self._memory_limit // 16
        first = 0 if ex.head else size if cache else min(length, self._chunk)
        try:
            fd, data = await trio.to_thread.run_sync(
                # (a file to keep is read whole, from its start, whatever the range)
                partial(open_stored, self._artifacts, sha256, size, 0 if cache else start, first),
                limiter=self.file_limiter,
            )
        except FileNotFoundError:
            if await self._removed(handle):
                # remembered for up to ``refresh`` seconds: prune and gc took it meanwhile
                log.info(
                    "%s: version %d of %s was removed (prune, gc): no longer served",
                    entry.relative_path,
                    handle.number,
                    handle.repository,
                )
                raise _VersionGone(handle) from None
            log.warning("%s: its file %s is not in the storage", entry.relative_path, sha256)
            await ex.error(404, "the stored file is missing (run triofetch repair)")
            return
        except Refused as exc:
            log.warning("%s: file %s refused: %s", entry.relative_path, sha256, exc.strerror)
            await ex.error(404)
            return
        except Damaged as exc:
            log.error("%s: file %s damaged: %s", entry.relative_path, sha256, exc.strerror)
            await ex.error(500, "the stored file is damaged (run triofetch repair)")
            return
        except OSError as exc:
            # answered here, never raised to the server (hypercorn's own 500 for an
            # exception could collide with another send and end the whole server)
            if StorageWriteError.out_of_descriptors(exc):
                # out of file descriptors: a moment's overload, not the file's fault
                log.warning("%s: cannot open file %s now: %s", entry.relative_path, sha256, exc)
                await ex.error(503, "too many open files", headers=_RETRY)
            else:
                log.error("%s: cannot read file %s: %s", entry.relative_path, sha256, exc)
                await ex.error(500, "the stored file cannot be read")
            return
        if cache:
            self._keep(sha256, data)
            os.close(fd)
            plan = await self._answer_partial(ex, headers, wanted, size)
            assert plan is not None
            await ex.start(plan[0], headers)
            await ex.body(data[start : start + length])
            return
        try:
            plan = await self._answer_partial(ex, headers, wanted, size)
            assert plan is not None
            await ex.start(plan[0], headers)
            if ex.head or len(data) == length:
                await ex.body(data)
                return
            failed = await self._stream(ex, fd, data, start + len(data), length - len(data))
        finally:
            os.close(fd)
        if failed is not None:
            # the response has begun: it can only be cut short (the server closes the
            # connection before its Content-Length), said once here, not by a traceback
            if isinstance(failed, Damaged):
                log.error("%s: file %s damaged: %s", entry.relative_path, sha256, failed.strerror)
            else:
                log.error("%s: cannot read file %s: %s", entry.relative_path, sha256, failed)
            raise CutShort(f"{entry.relative_path}: the stored file could not be read")

    def _keep(self, sha256: str, data: bytes) -> None:
        """Remember the bytes of a small stored file (content-addressed: they never go
        stale), dropping the least recently served ones past the limit."""
        if sha256 in self._memory:
            return
        self._memory[sha256] = data
        self._memory_bytes += _cost(sha256, data)
        while self._memory_bytes > self._memory_limit:
            key, dropped = self._memory.popitem(last=False)
            self._memory_bytes -= _cost(key, dropped)

    async def _stream(
        self, ex: Exchange, fd: int, first: bytes, offset: int, left: int
    ) -> OSError | None:
        """Send *first*, then *left* more bytes of *fd* from *offset*, piece by piece (each
        twice the one before, up to 16 chunks), each read in a worker thread while the one
        before it is sent; stop when the client goes.  A piece that cannot be read (the
        file truncated or failing while served) ends it early: that error is returned, for
        the caller to cut the response short."""
        chunk = self._chunk
        pending = first
        finished = False
        failed: OSError | None = None
        async with trio.open_nursery() as nursery:
            nursery.start_soon(_watch_disconnect, ex.receive, nursery.cancel_scope)
            while left > 0:
                # pieces double up to 16 chunks (4 MiB by default): a small range stays
                # small, a large file costs fewer round trips through the worker threads
                chunk = min(chunk * 2, self._chunk * _GROWTH)
                count = min(chunk, left)
                reading = _Read(partial(read_at, fd, offset, count), self.file_limiter)
                nursery.start_soon(reading.run)
                await ex.body(pending, more=True)
                try:
                    pending = await reading.result()
                except OSError as exc:
                    failed = exc
                    break
                offset += count
                left -= count
            else:
                finished = True
            nursery.cancel_scope.cancel()
        # the last piece outside the watched scope: sending it ends the response, which the
        # server reports as a disconnect, and its closing of the connection (Connection:
        # close) must not be cancelled half-way
        if finished:
            await ex.body(pending)
        return failed


class _Read:
    """One read in a worker thread, started now, its bytes awaited later."""

    __slots__ = ("_done", "_error", "_fn", "_limiter", "_value")

    def __init__(self, fn: Callable[[], bytes], limiter: trio.CapacityLimiter) -> None:
        self._fn = fn
        self._limiter = limiter
        self._done = trio.Event()
        self._value = b""
        self._error: BaseException | None = None

    async def run(self) -> None:
        try:
            self._value = await trio.to_thread.run_sync(self._fn, limiter=self._limiter)
        except Exception as exc:
            self._error = exc
        finally:
            self._done.set()

    async def result(self) -> bytes:
        await self._done.wait()
        if self._error is not None:
            raise self._error
        return self._value


#: an index page of more rows than this is made in a worker thread
_ROWS_ON_THE_LOOP = 500


async def _render(title: str, rows: list[Listing], note: str) -> bytes:
    """An index page with a ``../`` link; a long one made in a worker thread."""
    make = partial(render_index, title, rows, parent=True, note=note)
    if len(rows) <= _ROWS_ON_THE_LOOP:
        return make()
    return await trio.to_thread.run_sync(make)


async def _manifest(index: VersionIndex) -> tuple[bytes, str]:
    """The version's manifest: made once, in a worker thread (a version may hold millions
    of files), then kept by the index."""
    if index.manifest_made:
        return index.manifest()
    return await trio.to_thread.run_sync(index.manifest)


def _star(size: int) -> bytes:
    return f"bytes */{size}".encode("ascii")


def _number(text: str) -> int | None:
    """The version number *text* writes, in its one canonical form (ASCII digits, no
    leading zero: ``01`` is not version 1, nor is ``0`` a version), or None."""
    if (
        text.isascii()
        and text.isdigit()
        and not text.startswith("0")
        and len(text) <= _MAX_NUMBER_DIGITS
    ):
        return int(text)
    return None


def make_app(
    store: Store,
    *,
    repositories: Iterable[str] | None = None,
    refresh: float = 1.0,
    chunk_size: int = DEFAULT_CHUNK_SIZE,
    file_threads: int = 16,
    cached_versions: int = 16,
    memory_cache: int = DEFAULT_MEMORY_CACHE,
    downloader: Downloader | None = None,
) -> ContentApp:
    """The content app of *store*: an ASGI 3 application (``await app(scope, receive,
    send)``) serving its complete repository versions.

    Args:
        store: an open :class:`~triofetch.Store` with its artifact storage (``open_store(...,
            root=...)``; ``readonly=True`` is enough but for keeping on-demand files).  It
            stays the caller's to close, after the server has stopped.
        repositories: serve only these repositories (default: every repository of the
            store, including ones made later).
        refresh: for how many seconds a lookup of a repository's latest version (or of a
            version by number) is reused; a new version is served at ``/NAME/`` at most
            this long after it was completed.
        chunk_size: bytes of a stored file read (in a worker thread) and sent at a time
            first; the next pieces of a large file double up to 16 times that.
        file_threads: at most this many worker threads opening and reading files.
        cached_versions: how many versions' tables (path -> file, built by one query the
            first time a version is asked for) are kept.
        memory_cache: at most this many bytes of memory hold small stored files (one
            ``chunk_size`` at most, and a sixteenth of this) once read, their keys and
            bookkeeping counted, the least recently served dropped first; 0: none.  Files
            are content-addressed, so what is kept is never stale; it spares the
            worker-thread round trip of a small file.
        downloader: the open :class:`~triofetch.Downloader` that fetches the files of
            ``on_demand`` and ``streamed`` units when they are asked for (its options:
            retries, timeouts, credentials, proxies); default: one with the defaults,
            opened for the server's lifespan.  On-demand files are stored once fetched
            unless the store was opened ``readonly=True`` (then they are streamed only).

    Raises:
        InvalidInput: a bad argument, or a store without artifact storage.
    """
    return ContentApp(
        store,
        repositories=repositories,
        refresh=refresh,
        chunk_size=chunk_size,
        file_threads=file_threads,
        cached_versions=cached_versions,
        memory_cache=memory_cache,
        downloader=downloader,
    )
