"""The shape of the downloader and the transports (issue #15), and what the reshaping fixed.

- ``Downloader()`` is ``transport="auto"``: the trio transport whenever it can honour the
  proxy configuration (none, or http:// proxies), httpx otherwise (a SOCKS or https://
  proxy); the choice is ``Downloader.transport_name`` and logged at debug level.
- The modules of ``downloader/`` import one way (``_core`` imports the others, never the
  reverse), and the writing side (``_sinks``) knows nothing of HTTP.
- The transport protocol's optional extension is declared (``WatchableTransport``), not
  probed: a transport without it gets the defaults, one with it gets a watchdog.
- Redirects are followed by one loop for the trio and asks transports, with one set of rules.
- ``TransportOptions`` refuses a bool where a count goes (the asks transport's own check let
  ``max_connections=True`` through).
- ``FetchPlan`` and the transports are public names of public modules; importing
  ``triofetch.transports`` imports none of httpx, asks or Trio.
"""

from __future__ import annotations

import ast
import hashlib
import importlib.util
import logging
import subprocess
import sys
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable, Mapping
from contextlib import asynccontextmanager
from pathlib import Path

import pytest

import triofetch
from tests.rawserver import RawServer, Script
from triofetch.downloader import FetchPlan
from triofetch.testing import FaultServer, Redirect
from triofetch.transports import (
    HttpxTransport,
    Transport,
    TransportOptions,
    TrioTransport,
)
from triofetch.transports._base import WatchableTransport

DOWNLOADER = Path(triofetch.__file__).parent / "downloader"
TRANSPORTS = Path(triofetch.__file__).parent / "transports"
BODY = b"structured bytes\n" * 100

PROXY_VARIABLES = ["http_proxy", "https_proxy", "all_proxy", "no_proxy"]


@pytest.fixture
def no_proxy_environment(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    """No proxy in the environment, in either case."""
    for name in PROXY_VARIABLES:
        monkeypatch.delenv(name, raising=False)
        monkeypatch.delenv(name.upper(), raising=False)
    return monkeypatch


# -- transport="auto" --------------------------------------------------------------------


async def test_auto_is_the_default_and_the_trio_transport_without_a_proxy(
    no_proxy_environment: pytest.MonkeyPatch, http_server: FaultServer, temp_dir: Path
) -> None:
    http_server.add_file("/a", BODY)
    dl = triofetch.Downloader(temp_dir=temp_dir)
    assert dl.transport_name == "trio"  # known before it opens
    async with dl:
        assert type(dl._transport) is TrioTransport
        result = await dl.fetch(http_server.url("/a"))
    assert result.path.read_bytes() == BODY


@pytest.mark.parametrize("variable", ["HTTP_PROXY", "https_proxy", "ALL_PROXY"])
async def test_auto_is_the_trio_transport_with_an_http_proxy_in_the_environment(
    no_proxy_environment: pytest.MonkeyPatch, temp_dir: Path, variable: str
) -> None:
    # before: any proxy made "auto" pick httpx (the trio transport had no proxy support)
    no_proxy_environment.setenv(variable, "http://proxy.invalid:3128")
    async with triofetch.Downloader(temp_dir=temp_dir) as dl:
        assert dl.transport_name == "trio"
        assert type(dl._transport) is TrioTransport


async def test_auto_is_the_trio_transport_with_an_http_proxy_argument(
    no_proxy_environment: pytest.MonkeyPatch, temp_dir: Path
) -> None:
    async with triofetch.Downloader(
        proxy="http://user:pw@proxy.invalid:3128", trust_env=False, temp_dir=temp_dir
    ) as dl:
        assert dl.transport_name == "trio"
        assert type(dl._transport) is TrioTransport


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("ALL_PROXY", "socks5://proxy.invalid:1080"),
        ("https_proxy", "socks5h://proxy.invalid:1080"),
        ("HTTP_PROXY", "https://proxy.invalid:3128"),
    ],
)
async def test_auto_is_httpx_with_a_proxy_only_httpx_can_use(
    no_proxy_environment: pytest.MonkeyPatch, temp_dir: Path, variable: str, value: str
) -> None:
    no_proxy_environment.setenv(variable, value)
    dl = triofetch.Downloader(temp_dir=temp_dir)
    assert dl.transport_name == "httpx"
    if value.startswith("https:"):
        async with dl:
            assert type(dl._transport) is HttpxTransport


async def test_auto_is_httpx_with_a_socks_proxy_argument(
    no_proxy_environment: pytest.MonkeyPatch, temp_dir: Path
) -> None:
    dl = triofetch.Downloader(
        proxy="socks5://user:hidden-pw@proxy.invalid:1080", trust_env=False, temp_dir=temp_dir
    )
    assert dl.transport_name == "httpx"
    if importlib.util.find_spec("socksio") is None:
        # httpx needs its 'socks' extra: a clear InvalidInput (it raised ImportError)
        with pytest.raises(triofetch.InvalidInput, match="socksio") as info:
            await dl.__aenter__()
        assert "hidden-pw" not in str(info.value)
    else:  # pragma: no cover - socksio is not a test dependency
        async with dl:
            assert type(dl._transport) is HttpxTransport


async def test_auto_ignores_a_socks_proxy_no_request_can_meet(
    no_proxy_environment: pytest.MonkeyPatch, temp_dir: Path
) -> None:
    """ALL_PROXY comes after HTTP_PROXY and HTTPS_PROXY (httpx's order): with both set, a
    SOCKS ALL_PROXY is never used, and the trio transport can honour the rest."""
    no_proxy_environment.setenv("ALL_PROXY", "socks5://proxy.invalid:1080")
    no_proxy_environment.setenv("HTTP_PROXY", "http://proxy.invalid:3128")
    no_proxy_environment.setenv("HTTPS_PROXY", "http://proxy.invalid:3128")
    assert triofetch.Downloader(temp_dir=temp_dir).transport_name == "trio"
    no_proxy_environment.delenv("HTTPS_PROXY")
    assert triofetch.Downloader(temp_dir=temp_dir).transport_name == "httpx"


def test_auto_ignores_the_environment_without_trust_env(
    no_proxy_environment: pytest.MonkeyPatch, temp_dir: Path
) -> None:
    no_proxy_environment.setenv("ALL_PROXY", "socks5://proxy.invalid:1080")
    dl = triofetch.Downloader(trust_env=False, temp_dir=temp_dir)
    assert dl.transport_name == "trio"


def test_no_proxy_star_turns_the_environment_proxies_off(
    no_proxy_environment: pytest.MonkeyPatch, temp_dir: Path
) -> None:
    no_proxy_environment.setenv("ALL_PROXY", "socks5://proxy.invalid:1080")
    no_proxy_environment.setenv("NO_PROXY", "*")
    assert triofetch.Downloader(temp_dir=temp_dir).transport_name == "trio"


def test_transport_name_of_every_choice(
    no_proxy_environment: pytest.MonkeyPatch, temp_dir: Path
) -> None:
    for choice in ("trio", "httpx", "asks"):
        dl = triofetch.Downloader(transport=choice, temp_dir=temp_dir)  # type: ignore[arg-type]
        assert dl.transport_name == choice
    assert triofetch.Downloader(transport=PlainTransport()).transport_name == "PlainTransport"
    with pytest.raises(AttributeError):
        dl.transport_name = "httpx"  # type: ignore[misc]


def test_the_choice_is_logged_at_debug_level(
    no_proxy_environment: pytest.MonkeyPatch, temp_dir: Path, caplog: pytest.LogCaptureFixture
) -> None:
    no_proxy_environment.setenv("ALL_PROXY", "socks5://user:hidden-pw@proxy.invalid:1080")
    with caplog.at_level(logging.DEBUG, logger="triofetch.downloader"):
        triofetch.Downloader(temp_dir=temp_dir)
        triofetch.Downloader(transport=PlainTransport(), temp_dir=temp_dir)
    records = [r for r in caplog.records if r.name == "triofetch.downloader"]
    assert [r.levelno for r in records] == [logging.DEBUG, logging.DEBUG]
    assert "'httpx'" in records[0].getMessage() and "socks5://" in records[0].getMessage()
    assert "'PlainTransport'" in records[1].getMessage()
    assert "hidden-pw" not in caplog.text and "proxy.invalid" not in caplog.text


def test_the_trio_transport_refuses_a_proxy_it_cannot_use() -> None:
    """Never a direct connection instead: a clear InvalidInput, the proxy's password out."""
    for proxy in ("socks5://user:hidden-pw@proxy.invalid:1080", "https://proxy.invalid:3128"):
        with pytest.raises(triofetch.InvalidInput, match="use transport='httpx'") as info:
            TrioTransport(TransportOptions(proxy=proxy))
        assert "hidden-pw" not in str(info.value)


def test_an_unparseable_proxy_is_invalid_input(
    no_proxy_environment: pytest.MonkeyPatch, temp_dir: Path
) -> None:
    for proxy in ("ftp://proxy.invalid", "http://user:hidden-pw@proxy.invalid:99999", "http://"):
        with pytest.raises(triofetch.InvalidInput, match="proxy") as info:
            triofetch.Downloader(proxy=proxy, temp_dir=temp_dir)
        assert "hidden-pw" not in str(info.value)


# -- the modules of downloader/ -------------------------------------------------------------


def sibling_imports(path: Path) -> set[str]:
    """The modules of the same package that *path* imports (``from ._x import ...``)."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom) and node.level == 1:
            if node.module:
                found.add(node.module)
            else:
                found.update(alias.name for alias in node.names)
    return found


#: each module of downloader/ may import only those before it
DOWNLOADER_ORDER = [
    "_result",
    "_plan",
    "_auth",
    "_retry",
    "_sinks",
    "_many",
    "_closing",
    "_core",
]


def test_downloader_modules_import_one_way() -> None:
    modules = {p.stem for p in DOWNLOADER.glob("_*.py") if p.stem != "__init__"}
    assert modules == set(DOWNLOADER_ORDER)
    for position, name in enumerate(DOWNLOADER_ORDER):
        allowed = set(DOWNLOADER_ORDER[:position])
        assert sibling_imports(DOWNLOADER / f"{name}.py") <= allowed, name


def test_the_writing_side_knows_no_http() -> None:
    """``_sinks`` writes and hashes bytes: no transport, response, timeout or retry."""
    tree = ast.parse((DOWNLOADER / "_sinks.py").read_text(encoding="utf-8"))
    imported = {
        node.module or "" for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)
    } | {
        alias.name
        for node in ast.walk(tree)
        if isinstance(node, ast.Import)
        for alias in node.names
    }
    assert not any("transports" in name or name in ("httpx", "h11", "asks") for name in imported)
    # (its plan, and place_file: the move of a validated file to its destination)
    assert sibling_imports(DOWNLOADER / "_sinks.py") == {"_plan", "_result"}


def test_no_transport_ability_is_probed() -> None:
    """The downloader reads the extension through its declaration: no ``getattr`` on a
    transport or a response, no ``type: ignore`` on a call to one."""
    for path in DOWNLOADER.glob("*.py"):
        text = path.read_text(encoding="utf-8")
        assert "getattr(" not in text, path.name
        assert "ignore[call-arg]" not in text, path.name


# -- the transport extension: declared, and optional -------------------------------------------


class _PlainResponse:
    """A response of a third-party transport: the protocol's required members only."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.status_code = 200
        self.reason = "OK"
        self.headers: Mapping[str, str] = {"content-length": str(len(BODY))}

    async def iter_bytes(self) -> AsyncGenerator[bytes, None]:
        yield BODY


class PlainTransport:
    """A third-party transport that knows nothing of the optional extension."""

    def __init__(self) -> None:
        self.urls: list[str] = []

    @asynccontextmanager
    async def stream(self, url: str, headers: Mapping[str, str]) -> AsyncIterator[_PlainResponse]:
        self.urls.append(url)
        yield _PlainResponse(url)

    async def aclose(self) -> None:
        return None


async def test_a_transport_without_the_extension_gets_the_defaults(temp_dir: Path) -> None:
    transport = PlainTransport()
    assert isinstance(transport, Transport)
    assert not isinstance(transport, WatchableTransport)
    async with triofetch.Downloader(transport=transport, temp_dir=temp_dir) as dl:
        assert dl._watching is None  # no watchdog: each exchange has a cancel scope
        result = await dl.fetch("http://example.invalid/f", expected_size=len(BODY))
    assert result.sha256 == hashlib.sha256(BODY).hexdigest()
    assert transport.urls == ["http://example.invalid/f"]


async def test_a_watchable_transport_instance_gets_a_watchdog(
    http_server: FaultServer, temp_dir: Path
) -> None:
    http_server.add_file("/a", BODY)
    transport = TrioTransport(TransportOptions(max_connections=2))
    assert isinstance(transport, Transport) and isinstance(transport, WatchableTransport)
    async with triofetch.Downloader(transport=transport, temp_dir=temp_dir) as dl:
        assert dl._watching is not None and dl._watching[0] is transport
        result = await dl.fetch(http_server.url("/a"))
    assert result.path.read_bytes() == BODY


# -- redirects: one loop, one set of rules ---------------------------------------------------


def test_redirects_are_followed_in_one_place() -> None:
    """Only ``_redirects.py`` knows the redirect statuses among the transports that follow
    redirects themselves."""
    for path in (TRANSPORTS / "_asks.py", TRANSPORTS / "_trio" / "_transport.py"):
        text = path.read_text(encoding="utf-8")
        assert "301" not in text and "308" not in text, path
        assert "follow_redirects(" in text, path


async def test_too_many_redirects_names_the_url_asked_for(
    http_server: FaultServer, transport: str, temp_dir: Path
) -> None:
    http_server.add_file("/loop", b"", faults=[Redirect("/loop")] * 50)
    url = http_server.url("/loop") + "?from=here"
    async with triofetch.Downloader(
        transport=transport,  # type: ignore[arg-type]
        temp_dir=temp_dir,
        max_redirects=2,
        retries=0,
    ) as dl:
        with pytest.raises(triofetch.TooManyRedirects) as info:
            await dl.fetch(url)
    assert info.value.url == url


@pytest.mark.parametrize("transport", ["trio", pytest.param("asks", marks=pytest.mark.asks)])
async def test_a_redirect_with_a_broken_body_is_followed_anyway(
    raw: Callable[[Script], Awaitable[RawServer]], temp_dir: Path, transport: str
) -> None:
    """The body of a redirect means nothing: one cut short is dropped with its connection,
    and the redirect followed (the asks transport did so; the trio one failed the fetch)."""
    if transport == "asks":
        pytest.importorskip("asks")
    ok = b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s" % (len(BODY), BODY)
    cut = b"HTTP/1.1 302 Found\r\nLocation: /there\r\nContent-Length: 100\r\n\r\nshort"

    def script(request: bytes) -> list[bytes]:
        return [cut, b"<close>"] if request.startswith(b"GET /here ") else [ok]

    server = await raw(script)
    base = f"http://127.0.0.1:{server.port}"
    async with triofetch.Downloader(
        transport=transport,  # type: ignore[arg-type]
        temp_dir=temp_dir,
        retries=0,
    ) as dl:
        result = await dl.fetch(base + "/here")
    assert result.url == base + "/there"
    assert result.path.read_bytes() == BODY
    assert server.connections == 2  # the redirect's connection was not reused


# -- counts are ints, not bools ----------------------------------------------------------------


@pytest.mark.parametrize("field", ["max_connections", "max_redirects"])
@pytest.mark.parametrize("value", [True, False, 2.0, "3"])
def test_transport_options_refuse_what_is_not_a_count(field: str, value: object) -> None:
    # before: TransportOptions took anything, and the asks transport's own check
    # (max_connections < 1) let max_connections=True through as one connection
    with pytest.raises(triofetch.InvalidInput, match=field):
        TransportOptions(**{field: value})  # type: ignore[arg-type]


def test_transport_options_refuse_counts_too_small() -> None:
    with pytest.raises(triofetch.InvalidInput, match="max_connections must be an integer >= 1"):
        TransportOptions(max_connections=0)
    with pytest.raises(triofetch.InvalidInput, match="max_redirects must be an integer >= 0"):
        TransportOptions(max_redirects=-1)
    assert TransportOptions(max_connections=1, max_redirects=0).max_redirects == 0


@pytest.mark.parametrize("value", [True, -1, 1.5, "2"])
def test_expected_size_must_be_a_non_negative_int(value: object, tmp_path: Path) -> None:
    dl = triofetch.Downloader(temp_dir=tmp_path)
    with pytest.raises(triofetch.InvalidInput, match="expected_size"):
        dl.plan(expected_size=value)  # type: ignore[arg-type]
    assert dl.plan(expected_size=0).expected_size == 0


@pytest.mark.parametrize("name", ["backoff", "backoff_max", "max_retry_after"])
def test_delays_may_be_infinite_but_not_nan(name: str) -> None:
    triofetch.Downloader(**{name: float("inf")})  # no cap: as before
    with pytest.raises(triofetch.InvalidInput, match=f"{name} must be a number >= 0"):
        triofetch.Downloader(**{name: float("nan")})


# -- public names ---------------------------------------------------------------------------


def test_plan_returns_a_public_fetch_plan(tmp_path: Path) -> None:
    plan = triofetch.Downloader(temp_dir=tmp_path).plan(
        expected_size=3, digests=["md5"], headers={"X-Extra": "1"}
    )
    assert type(plan) is FetchPlan
    assert FetchPlan.__module__ == "triofetch.downloader"
    assert plan.expected_size == 3 and "md5" in plan.algorithms
    assert plan.headers["x-extra"] == "1"
    assert "FetchPlan(" in repr(plan)


def test_transports_are_public_and_imported_lazily() -> None:
    for cls in (TrioTransport, HttpxTransport, triofetch.transports.FileTransport):
        assert cls.__module__ == "triofetch.transports", cls
    probe = (
        "import sys, triofetch.transports; "
        "print(sorted(m for m in ('trio', 'httpx', 'asks', 'anyio') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    assert out.stdout == "[]\n"
