"""Property tests of on-demand serving (issue #18): random upstream faults, random client
aborts, concurrent clients.

Hypothesis draws a few files recorded ``on_demand`` (some large enough to be streamed in
several pieces), a fault plan for each upstream path (transient faults — server errors,
resets, truncated or wrong bytes, slow bodies — or a path broken for good; the testing
kit's strategies), a set of clients asking for them at once, some of which go away after a
few bytes, and how much of a body the app keeps in memory for its requests (its own window,
or 16 KiB, so that requests read large bodies back from the temp file).  Whatever happens:

- every client that stays gets the right bytes in a complete response, a ``502``, or a
  response cut short (fewer bytes than its ``Content-Length``) — never a complete response
  with other bytes;
- the store holds each file complete or not at all, and no temp file is left
  (:func:`triofetch.testing.check_store`);
- once the upstream is healed, every file is served whole and then stored.
"""

from __future__ import annotations

import hashlib
import itertools
import tempfile
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import trio
from hypothesis import given, note, strategies as st

import triofetch
from triofetch import DeclarativeArtifact, DeclarativeUnit, open_store
from triofetch.serve import ContentApp, _ondemand, make_app, serve_app
from triofetch.testing import Fault, FaultServer, check_store, strategies

_ids = itertools.count()


@dataclass(frozen=True)
class Client:
    file: int
    delay: float
    #: go away after this many body bytes (None: read to the end)
    leave_after: int | None


@dataclass
class Answer:
    status: int
    complete: bool
    body: bytes


#: the sizes of the files: small ones (one piece) and large ones (streamed in several)
sizes_st = st.lists(
    st.one_of(st.integers(0, 64), st.integers(70_000, 400_000)), min_size=1, max_size=3
)
clients_st = st.lists(
    st.builds(
        Client,
        file=st.integers(0, 2),
        delay=st.sampled_from([0.0, 0.0, 0.01, 0.03]),
        leave_after=st.none() | st.integers(0, 100_000),
    ),
    min_size=1,
    max_size=6,
)
plans_st = st.lists(strategies.fault_plans(max_faults=2, max_delay=0.002), min_size=3, max_size=3)


def content(seed: int, size: int) -> bytes:
    """Distinct bytes for each file: a pattern from its seed, *size* long."""
    pattern = hashlib.sha256(f"{seed}".encode()).digest()
    return (pattern * (size // 32 + 1))[:size]


async def ask(port: int, path: str, leave_after: int | None) -> Answer | None:
    """GET *path*; None when the client went away on purpose."""
    with trio.fail_after(30):
        stream = await trio.open_tcp_stream("127.0.0.1", port)
        async with stream:
            request = f"GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
            await stream.send_all(request.encode())
            data = bytearray()
            while True:
                try:
                    chunk = await stream.receive_some(1 << 16)
                except trio.BrokenResourceError:
                    break
                if not chunk:
                    break
                data += chunk
                if (
                    leave_after is not None
                    and b"\r\n\r\n" in data
                    and len(data.partition(b"\r\n\r\n")[2]) >= leave_after
                ):
                    return None
    head, _, body = bytes(data).partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split()[1])
    headers = {k.strip().lower(): v.strip() for k, _, v in (x.partition(":") for x in lines[1:])}
    if "content-length" in headers:
        complete = len(body) == int(headers["content-length"])
    else:  # chunked: complete only with its last chunk
        complete, body = _dechunk(body)
    return Answer(status, complete, body)


def _dechunk(body: bytes) -> tuple[bool, bytes]:
    out = b""
    while True:
        line, sep, rest = body.partition(b"\r\n")
        if not sep:
            return False, out
        size = int(line, 16)
        if size == 0:
            return True, out
        if len(rest) < size + 2:
            return False, out + rest[:size]
        out += rest[:size]
        body = rest[size + 2 :]


async def settle(app: ContentApp) -> None:
    """Wait until no on-demand download runs (they go on after their clients left)."""
    with trio.fail_after(30):
        await app.on_demand.wait_idle()


#: the bytes of a body kept in memory for the requests: the app's, or so few that the
#: requests read most of a large body back from the temp file
windows_st = st.sampled_from([_ondemand._WINDOW, 16 * 1024])


@given(sizes=sizes_st, plans=plans_st, clients=clients_st, window=windows_st)
async def test_on_demand_under_faults_and_aborts(
    http_server_module: FaultServer,
    sizes: list[int],
    plans: list[list[Fault]],
    clients: list[Client],
    window: int,
) -> None:
    run = next(_ids)
    # (set for this example only: Hypothesis runs the examples one after the other)
    default, _ondemand._WINDOW = _ondemand._WINDOW, window
    try:
        await _examine(http_server_module, run, sizes, plans, clients)
    finally:
        _ondemand._WINDOW = default


async def _examine(
    http_server_module: FaultServer,
    run: int,
    sizes: list[int],
    plans: list[list[Fault]],
    clients: list[Client],
) -> None:
    server = http_server_module
    files = [content(run * 10 + i, size) for i, size in enumerate(sizes)]
    names = [f"f{i}.bin" for i in range(len(files))]
    units = []
    for i, data in enumerate(files):
        path = f"/odp{run}/{names[i]}"
        server.add_file(path, data, faults=list(plans[i]))
        art = DeclarativeArtifact(
            server.url(path), names[i], {"sha256": hashlib.sha256(data).hexdigest()}, len(data)
        )
        units.append(
            DeclarativeUnit(
                "file", (names[i], art.digests["sha256"]), {"relative_path": names[i]}, [art]
            )
        )
    note(f"sizes {[len(f) for f in files]}, plans {plans}, clients {clients}")
    with tempfile.TemporaryDirectory() as tmp:
        async with (
            open_store(None, root=Path(tmp)) as store,
            triofetch.Downloader(retries=1, backoff=0.001) as dl,
        ):
            report = await triofetch.ContentUnitCreator(store, dl, policy="on_demand").run(
                units, repository="r"
            )
            assert report.ok
            app = make_app(store, refresh=0, downloader=dl)
            async with trio.open_nursery() as nursery:
                urls = await nursery.start(partial(serve_app, app, port=0))
                port = int(urls[0].rsplit(":", 1)[1])
                answers: list[tuple[Client, Answer]] = []

                async def one(client: Client) -> None:
                    index = client.file % len(files)
                    await trio.sleep(client.delay)
                    got = await ask(port, f"/r/{names[index]}", client.leave_after)
                    if got is not None:
                        answers.append((client, got))

                async with trio.open_nursery() as clients_nursery:
                    for client in clients:
                        clients_nursery.start_soon(one, client)
                await settle(app)
                for client, answer in answers:
                    right = files[client.file % len(files)]
                    if answer.status == 200 and answer.complete:
                        assert answer.body == right, "a complete response with wrong bytes"
                    elif answer.status == 200:
                        assert len(answer.body) < len(right)
                    else:
                        assert answer.status == 502, answer
                assert await check_store(store) == []
                # healed: every file whole, then stored
                for i, data in enumerate(files):
                    server.add_file(f"/odp{run}/{names[i]}", data)
                for i, data in enumerate(files):
                    healed = await ask(port, f"/r/{names[i]}", None)
                    assert healed is not None and healed.status == 200
                    assert healed.complete and healed.body == data
                await settle(app)
                assert await store.missing_artifacts("r") == []
                assert await check_store(store) == []
                nursery.cancel_scope.cancel()
