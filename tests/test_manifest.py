"""The PULP_MANIFEST reader: parsing, validation (naming the line), URLs, fetching."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

import triofetch
from triofetch.manifest import (
    PulpManifestReader,
    RepositoryIndex,
    RepositoryReader,
    local_source,
    manifest_base_url,
    parse_pulp_manifest,
    read_manifest,
    split_source,
)
from triofetch.testing import FaultServer, Status

SHA_A = hashlib.sha256(b"a").hexdigest()
SHA_B = hashlib.sha256(b"b").hexdigest()
BASE = "http://example.invalid/repo/"


def parse(text: str | bytes) -> triofetch.manifest.PulpManifest:
    data = text.encode() if isinstance(text, str) else text
    return parse_pulp_manifest(data.splitlines(keepends=True), base_url=BASE, source="M")


def test_lines_become_file_units() -> None:
    manifest = parse(f"a.txt,{SHA_A},1\ndir/b c.txt,{SHA_B.upper()},1\n")
    assert isinstance(manifest, RepositoryIndex)
    assert len(manifest) == 2
    assert manifest.total_size == 2
    units = list(manifest.units())
    assert [u.type for u in units] == ["file", "file"]
    assert units[1].natural_key == ("dir/b c.txt", SHA_B)  # digests normalized to lower case
    assert units[1].fields == {"relative_path": "dir/b c.txt", "size": 1}
    (art,) = units[1].artifacts
    assert art.relative_path == "dir/b c.txt"
    assert art.url == BASE + "dir/b%20c.txt"
    assert art.sha256 == SHA_B and art.size == 1
    assert manifest.unit_size(("dir/b c.txt", SHA_B)) == 1
    assert manifest.unit_size(("dir/b c.txt", SHA_A)) == 0
    assert list(manifest.units()) == units  # each call starts again


def test_crlf_blank_lines_comments_and_identical_duplicates() -> None:
    text = f"\r\n# a comment\r\na.txt,{SHA_A},1\r\n   \r\n\r\na.txt,{SHA_A},1\r\nb,{SHA_B},1"
    manifest = parse(text)
    assert [(e.relative_path, e.line_number) for e in manifest.entries] == [("a.txt", 3), ("b", 7)]


def test_relative_paths_are_url_encoded() -> None:
    names = ["with space.txt", "100%.txt", "hash#tag.txt", "what?.txt", "été/ünï.txt", "a,b.txt"]
    manifest = parse("".join(f"{n},{SHA_A},1\n" for n in names))
    urls = [u.artifacts[0].url for u in manifest.units()]
    assert urls == [
        BASE + "with%20space.txt",
        BASE + "100%25.txt",
        BASE + "hash%23tag.txt",
        BASE + "what%3F.txt",
        BASE + "%C3%A9t%C3%A9/%C3%BCn%C3%AF.txt",
        BASE + "a%2Cb.txt",
    ]


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ("just-a-name", "expected 'relative_path,sha256,size'"),
        ("a,b", "expected 'relative_path,sha256,size'"),
        (f"a.txt,{SHA_A[:-1]},1", "invalid sha256"),
        (f"a.txt,{'z' * 64},1", "invalid sha256"),
        (f"a.txt,{SHA_A},-1", "must not be negative"),
        (f"a.txt,{SHA_A},1.5", "invalid size"),
        (f"a.txt,{SHA_A},", "invalid size"),
        (f"/etc/passwd,{SHA_A},1", "absolute"),
        (f"../up.txt,{SHA_A},1", "'..' segment"),
        (f"a/../../up.txt,{SHA_A},1", "'..' segment"),
        (f"a\\b.txt,{SHA_A},1", "backslash"),
        (f"a\x00b.txt,{SHA_A},1", "NUL"),
        (f"a//b.txt,{SHA_A},1", "empty or '.' segment"),
        (f",{SHA_A},1", "non-empty"),
        (f"{'x' * 3000},{SHA_A},1", "too long"),
        # (under 2048 bytes, but the file's key, path and sha256, is longer: the limit named)
        (f"{'/'.join(['x' * 199] * 10)},{SHA_A},1", "path too long (1999 bytes, at most 1977: "),
    ],
)
def test_bad_line_is_named(line: str, message: str) -> None:
    with pytest.raises(triofetch.ManifestError) as info:
        parse(f"ok.txt,{SHA_A},1\n\n{line}\n")
    error = info.value
    assert error.line_number == 3
    assert error.line == line
    assert message in str(error)
    assert str(error).startswith("M:3: ")


def test_the_longest_path_a_key_holds_is_accepted() -> None:
    """The manifest measures a file's key as the store does: a path of 1977 bytes (with its
    sha256, a key of 2048) is read, and a unit of it declared; it was refused as one byte
    too long (the manifest counted the JSON with a space after the comma)."""
    longest = "/".join(["x" * 196] * 10) + "/" + "y" * 7  # 1977 bytes
    parsed = parse(f"{longest},{SHA_A},1\n")
    assert parsed.entries[0].relative_path == longest
    assert [u.natural_key for u in parsed.units()] == [(longest, SHA_A)]
    with pytest.raises(triofetch.ManifestError, match="at most 1977"):
        parse(f"{longest}y,{SHA_A},1\n")


def test_one_path_with_two_contents() -> None:
    with pytest.raises(triofetch.ManifestError) as info:
        parse(f"a.txt,{SHA_A},1\nb.txt,{SHA_B},1\na.txt,{SHA_B},1\n")
    assert info.value.line_number == 3
    assert "listed twice with different contents (line 1" in str(info.value)
    with pytest.raises(triofetch.ManifestError, match="different contents"):
        parse(f"a.txt,{SHA_A},1\na.txt,{SHA_A},2\n")  # same sha256, other size


def test_a_file_cannot_also_be_a_directory() -> None:
    with pytest.raises(triofetch.ManifestError) as info:
        parse(f"a/b/c.txt,{SHA_A},1\na/b,{SHA_B},1\n")
    assert info.value.line_number == 1
    assert "'a/b' is a file (line 2) and also a directory" in str(info.value)


def test_not_utf8() -> None:
    with pytest.raises(triofetch.ManifestError, match="not UTF-8") as info:
        parse(f"a.txt,{SHA_A},1\n".encode() + b"\xff\xfe,x,1\n")
    assert info.value.line_number == 2


def test_base_url_and_sources(tmp_path: Path) -> None:
    assert manifest_base_url("https://h/a/b/PULP_MANIFEST?x=1#f") == "https://h/a/b/"
    assert manifest_base_url("https://h") == "https://h/"
    assert split_source("https://u%40x:p%3Aw@h:8/M") == ("https://h:8/M", ("u@x", "p:w"))
    assert split_source("https://h/M") == ("https://h/M", None)
    assert local_source(tmp_path) == (tmp_path / "PULP_MANIFEST").as_uri()


async def test_reader_over_http(http_server: FaultServer) -> None:
    http_server.add_file("/r/PULP_MANIFEST", f"x y.txt,{SHA_A},1\n".encode())
    async with triofetch.Downloader(retries=0) as dl:
        manifest = await read_manifest(http_server.url("/r/PULP_MANIFEST"), dl)
        (unit,) = manifest.units()
        assert unit.artifacts[0].url == http_server.url("/r/x%20y.txt")
        # a URL ending with "/" means the PULP_MANIFEST in that directory
        again = await PulpManifestReader().read(http_server.url("/r/"), dl)
        assert len(again) == 1


async def test_reader_errors_are_manifest_errors(http_server: FaultServer) -> None:
    http_server.add_file("/r/PULP_MANIFEST", b"", faults=[Status(404)])
    async with triofetch.Downloader(retries=0) as dl:
        with pytest.raises(triofetch.ManifestError, match=r"cannot fetch the manifest.*404"):
            await read_manifest(http_server.url("/r/PULP_MANIFEST"), dl)
        http_server.add_file("/r/PULP_MANIFEST", b"bad line\n")
        with pytest.raises(triofetch.ManifestError, match=r"PULP_MANIFEST:1: expected"):
            await read_manifest(http_server.url("/r/PULP_MANIFEST"), dl)


async def test_reader_over_file_url(tmp_path: Path) -> None:
    (tmp_path / "PULP_MANIFEST").write_text(f"é.txt,{SHA_A},1\r\n", encoding="utf-8")
    async with triofetch.Downloader() as dl:
        manifest = await read_manifest(local_source(tmp_path), dl)
    (unit,) = manifest.units()
    assert unit.artifacts[0].url == tmp_path.as_uri() + "/%C3%A9.txt"


@pytest.mark.parametrize("base_url", ["http://h/repo", "http://h/repo/?x=1", "", None])
def test_a_base_url_not_ending_with_a_slash_is_invalid_input(base_url: object) -> None:
    """``http://h/repo`` made ``http://h/repoa.txt`` of ``a.txt`` before, silently."""
    lines = iter([f"a.txt,{SHA_A},1\n"])
    with pytest.raises(triofetch.InvalidInput, match=r"base_url must be a URL ending with '/'"):
        parse_pulp_manifest(lines, base_url=base_url)  # type: ignore[arg-type]
    assert next(lines)  # refused before any line was read
    (unit,) = parse_pulp_manifest([f"a.txt,{SHA_A},1\n"], base_url="http://h/repo/").units()
    assert unit.artifacts[0].url == "http://h/repo/a.txt"


async def test_a_source_that_is_not_a_url_is_invalid_input(tmp_path: Path) -> None:
    """A Path raised AttributeError, bytes a TypeError, None as downloader AttributeError."""
    (tmp_path / "PULP_MANIFEST").write_text(f"a.txt,{SHA_A},1\n", encoding="utf-8")
    async with triofetch.Downloader() as dl:
        with pytest.raises(triofetch.InvalidInput, match=r"must be a URL.*local_source"):
            await read_manifest(tmp_path, dl)  # type: ignore[arg-type]
        with pytest.raises(triofetch.InvalidInput, match=r"must be a URL \(a str.*got b'file"):
            await read_manifest(local_source(tmp_path).encode(), dl)  # type: ignore[arg-type]
        with pytest.raises(triofetch.InvalidInput, match=r"must be a URL.*got PosixPath"):
            await PulpManifestReader().read(tmp_path, dl)  # type: ignore[arg-type]
        with pytest.raises(triofetch.InvalidInput, match=r"reader must be a RepositoryReader"):
            await read_manifest(local_source(tmp_path), dl, "pulp")  # type: ignore[arg-type]
        assert len(await read_manifest(local_source(tmp_path), dl)) == 1
    with pytest.raises(triofetch.InvalidInput, match=r"downloader must be a Downloader"):
        await read_manifest(local_source(tmp_path), None)  # type: ignore[arg-type]


def test_reader_is_pluggable() -> None:
    class Empty(RepositoryReader):
        format = "empty"

        async def read(self, source: str, downloader: triofetch.Downloader) -> RepositoryIndex:
            return parse("")

    assert Empty.format == "empty"
    with pytest.raises(TypeError):
        RepositoryReader()  # type: ignore[abstract]
