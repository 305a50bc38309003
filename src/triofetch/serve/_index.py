"""One repository version as the content app sees it: files by path, directories, the
generated ``PULP_MANIFEST``, and the HTML index pages.

Owns turning the units of a version (:meth:`Store.list_units <triofetch.Store.list_units>`)
into a lookup table built once per version (a complete version never changes), the bytes
of its manifest, and the markup of a directory listing.  Building is plain CPU work on
values, run by the app in a worker thread; it must not touch the database, the storage or
ASGI.
"""

from __future__ import annotations

import hashlib
import html
import logging
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from urllib.parse import quote

from ..manifest import MANIFEST_NAME
from ..store import UnitInfo, UnitKey

__all__ = ["FileEntry", "Listing", "VersionIndex", "render_index"]

log = logging.getLogger("triofetch.serve")


@dataclass(frozen=True, slots=True)
class FileEntry:
    """A file of a version: its content (when known) and whether it is stored.

    ``stored`` is False for a file of an on-demand unit not downloaded yet; its ``sha256``
    and ``size`` are then what the unit declares (a ``file`` unit's key and fields), or
    None when it does not say.
    """

    relative_path: str
    sha256: str | None
    size: int | None
    stored: bool
    unit_id: int
    #: the unit's key (to find the file once another request stored it)
    key: UnitKey | None = None


@dataclass(slots=True)
class VersionIndex:
    """The files and directories of one complete repository version."""

    repository: str
    number: int
    files: dict[str, FileEntry] = field(default_factory=dict)
    #: directory path ("" for the top) -> {child name: whether it is a directory}
    dirs: dict[str, dict[str, bool]] = field(default_factory=lambda: {"": {}})
    #: paths held by several units of the version: not served (units of a type whose
    #: repository key is not a path may share a path; so may those of a version made
    #: before schema 4)
    ambiguous: set[str] = field(default_factory=set)
    _manifest: bytes | None = None
    _manifest_sha256: str = ""

    @classmethod
    def build(cls, repository: str, number: int, units: Iterable[UnitInfo]) -> VersionIndex:
        """The index of the version holding *units*."""
        index = cls(repository, number)
        files = index.files
        for unit in units:
            key = unit.key.natural_key
            for path, record in unit.artifacts.items():
                if record is not None:
                    entry = FileEntry(path, record.sha256, record.size, True, unit.id)
                else:
                    # not downloaded (on-demand): a file unit's key and fields say what it is
                    is_file = unit.key.type == "file" and len(key) == 2 and key[0] == path
                    size = unit.fields.get("size") if is_file else None
                    entry = FileEntry(
                        path,
                        key[1] if is_file else None,
                        size if isinstance(size, int) and not isinstance(size, bool) else None,
                        False,
                        unit.id,
                        unit.key,
                    )
                if path in files or path in index.ambiguous:
                    index.ambiguous.add(path)
                    files.pop(path, None)
                    continue
                files[path] = entry
        if index.ambiguous:
            log.warning(
                "repository %r version %d holds %d paths in more than one unit (units "
                "whose repository key is not their path, or a version made before schema "
                "4); they are not served: %s",
                repository,
                number,
                len(index.ambiguous),
                ", ".join(sorted(index.ambiguous)[:5]),
            )
        for path in list(files) + sorted(index.ambiguous):
            index._add_parents(path)
        return index

    def _add_parents(self, path: str) -> None:
        parts = path.split("/")
        parent = ""
        for i, name in enumerate(parts):
            is_dir = i < len(parts) - 1
            children = self.dirs.setdefault(parent, {})
            children[name] = children.get(name, False) or is_dir
            parent = f"{parent}/{name}" if parent else name
            if is_dir:
                self.dirs.setdefault(parent, {})

    @property
    def manifest_made(self) -> bool:
        """Whether :meth:`manifest` has been made already (then it returns at once)."""
        return self._manifest is not None

    def manifest(self) -> tuple[bytes, str]:
        """The ``PULP_MANIFEST`` of this version and its sha256 (made once, then kept).

        One line ``relative_path,sha256,size`` per file whose content is known, sorted by
        path; a path that a manifest line cannot carry (one starting with ``#``, read as a
        comment) and a file named ``PULP_MANIFEST`` at the top are left out, with a warning.
        """
        if self._manifest is None:
            lines = []
            left_out = []
            for path in sorted(self.files):
                entry = self.files[path]
                if entry.sha256 is None or entry.size is None:
                    left_out.append(path)
                    continue
                if path == MANIFEST_NAME or path.startswith("#"):
                    left_out.append(path)
                    continue
                lines.append(f"{path},{entry.sha256},{entry.size}\n")
            if left_out:
                log.warning(
                    "the PULP_MANIFEST of repository %r version %d leaves out %d files it "
                    "cannot list: %s",
                    self.repository,
                    self.number,
                    len(left_out),
                    ", ".join(left_out[:5]),
                )
            data = "".join(lines).encode("utf-8")
            self._manifest_sha256 = hashlib.sha256(data).hexdigest()
            self._manifest = data
        return self._manifest, self._manifest_sha256


@dataclass(frozen=True, slots=True)
class Listing:
    """One row of an index page: a name, whether it is a directory, and what to say of it."""

    name: str
    is_dir: bool
    size: int | None = None
    note: str = ""


_STYLE = (
    "body{font-family:system-ui,sans-serif;margin:2em;color:#222}"
    "table{border-collapse:collapse}td,th{padding:.2em 1.2em .2em 0;text-align:left}"
    "td.size{text-align:right;font-variant-numeric:tabular-nums}"
    "td.note{color:#777;font-family:monospace}a{text-decoration:none}a:hover{text-decoration:"
    "underline}p.foot{color:#777;font-size:small}"
)


def render_index(title: str, rows: Sequence[Listing], *, parent: bool, note: str = "") -> bytes:
    """An HTML page listing *rows* under the heading ``Index of TITLE``.

    Every name is HTML-escaped, every link relative and percent-encoded (a name holding
    ``:`` or ``?`` cannot be read as a scheme or a query); *parent* adds a ``../`` link.
    """
    esc = html.escape
    out = [
        '<!DOCTYPE html>\n<html><head><meta charset="utf-8">',
        f"<title>Index of {esc(title)}</title><style>{_STYLE}</style></head>\n<body>",
        f"<h1>Index of {esc(title)}</h1>\n",
    ]
    if note:
        out.append(f"<p>{esc(note)}</p>\n")
    out.append("<table>\n<tr><th>Name</th><th>Size</th><th></th></tr>\n")
    if parent:
        out.append('<tr><td><a href="../">../</a></td><td></td><td></td></tr>\n')
    for row in rows:
        shown = row.name + ("/" if row.is_dir else "")
        href = quote(row.name, safe="") + ("/" if row.is_dir else "")
        size = "" if row.size is None else f"{row.size:,}"
        out.append(
            f'<tr><td><a href="{esc(href)}">{esc(shown)}</a></td>'
            f'<td class="size">{size}</td><td class="note">{esc(row.note)}</td></tr>\n'
        )
    out.append('</table>\n<p class="foot">triofetch</p>\n</body></html>\n')
    return "".join(out).encode("utf-8")
