"""The schema, as numbered migrations for each database.

Owns the tables, their migrations, the check of a store's schema version, and the two
integer hashes the SQLite indexes are built on (``sha256_prefix``, ``unit_key_hash``).  It
must not hold any query of the store's work, and imports nothing of the store.

Both backends hold the same tables with the same meaning::

    artifacts            sha256 unique, size, digests (JSON object, sha256 included)
                         (SQLite, from version 2: sha256_prefix, indexed, see below)
    units                type + natural_key unique (natural_key: JSON array of strings),
                         fields (JSON object)
                         (SQLite, from version 3: key_hash, indexed, see below)
    unit_artifacts       unit, relative_path unique per unit, artifact (NULL: on-demand),
                         streamed flag (from version 5)
    remote_artifacts     unit_artifact, url (each URL once per unit_artifact), expected
                         size/digests
    repositories         name unique, last_number (from version 6: the largest version
                         number handed out)
    repository_versions  repository, number (unique per repository), complete flag
    version_units        version, unit (primary key)
    triofetch_schema     one row: the schema version

Migrations are applied in order when a store is opened (under a lock, so several workers
opening the same new database at once migrate it once).  A database whose version is newer
than :data:`SCHEMA_VERSION` was written by a newer triofetch and is refused.

Version 2 (SQLite only; PostgreSQL's version 2 changes nothing) replaces the unique index on
``artifacts.sha256`` by an index on ``sha256_prefix``, the first 4 bytes of the digest as a
signed integer.  A unique text index on random 64-character digests is the costliest
structure of a bulk commit: new artifacts land on random pages of it, and each page dirtied
is written to the WAL, then checkpointed; the integer index is a small fraction of its
size.  Uniqueness of sha256 is then kept by the only writer, ``SQLiteBackend.q_artifact_ids``:
it looks digests up by prefix and inserts the missing ones inside the same write
transaction, and SQLite runs one write transaction at a time.  Prefixes collide (two digests,
one prefix: common in a large store, and an attacker can make them at will): lookups always
compare the whole digest, a collision only costs reading one more row.

Version 3 (SQLite only again) does the same for units: the unique index on (type,
natural_key), long JSON text in random order, gives way to an index on ``key_hash``, a
64-bit BLAKE2b of the key (:func:`unit_key_hash`), kept unique per key by the writer in
``SQLiteBackend.q_insert_units``.  A smaller index means fewer pages written per commit
while the store is small to middling; once it is large, a slice of random inserts dirties
nearly every leaf of either index, and the gain fades.

Version 4 (both backends) gives a store its whole life (see ``docs/store.rst``):

- ``units.repo_key``: the unit's *repository key* as text (NULL for a type that declares
  none), indexed: a version holds at most one unit per repository key.  For a type whose key
  is a relative path it is the path itself, so that a file and a directory at one path are
  found with the index too (the parents of ``a/b/c`` are ``a`` and ``a/b``; its children sort
  between ``a/b/c/`` and ``a/b/c0``); any other key is ``/`` followed by the JSON array
  ``[type, [values...]]`` (a relative path never starts with ``/``).  Existing ``file`` units
  get theirs from their ``relative_path`` field.
- ``version_units.added``: set when the writer of an incomplete version added the unit
  (rather than carrying it over from the base version): new content replaces carried-over
  content at the same key, and two additions at one key are refused.
- ``repository_versions.created``: when the version was started (ISO 8601, UTC; NULL for
  versions made before version 4).

Version 5 (both backends): ``unit_artifacts.streamed``, set for the files of units created
with the ``streamed`` policy: the content app serves them from their remote URLs without
storing them (a file without it, from an ``on_demand`` unit, is stored when first served).

Version 6 (both backends): ``repositories.last_number``, the largest version number the
repository ever handed out (set from its versions by the migration).  A new version takes
the number after it, so the number of an abandoned incomplete version that ``gc`` removed
is not handed out again (``max(number) + 1`` gave it to the next version).  Discarding a
version gives its number back when it is the last one handed out (``last_number - 1``):
a failed or no-op run leaves no gap.
"""

from __future__ import annotations

import hashlib
import struct
from collections.abc import Callable
from typing import Any, TypeAlias

from ..errors import SchemaVersionError, StoreError

__all__ = [
    "POSTGRES_MIGRATIONS",
    "SCHEMA_VERSION",
    "SQLITE_MIGRATIONS",
    "check_readable",
    "migrate",
    "sha256_prefix",
    "unit_key_hash",
]

SCHEMA_VERSION = 6

#: a migration step: an SQL statement, or a function given the connection
Step: TypeAlias = "str | Callable[[Any], None]"


def sha256_prefix(sha256: str) -> int:
    """The first 4 bytes of a hex sha256 as a signed integer (4 bytes in an SQLite record)."""
    value = int(sha256[:8], 16)
    return value - (1 << 32) if value >= 1 << 31 else value


def _register_sha256_prefix(conn: Any) -> None:
    conn.create_function("triofetch_sha256_prefix", 1, sha256_prefix, deterministic=True)


_INT64 = struct.Struct(">q")


def unit_key_hash(
    type_: str,
    natural_key: str,
    _blake2b: Any = hashlib.blake2b,
    _unpack: Callable[[bytes], tuple[int]] = _INT64.unpack,
) -> int:
    """A unit's key (type, natural key as JSON) hashed to a signed 64-bit integer.

    BLAKE2b: stable across processes and versions (unlike ``hash()``), and collisions cannot
    be made at will.  The hash only narrows a lookup; lookups compare the whole key, so a
    collision costs reading one more row.
    """
    return _unpack(_blake2b(f"{type_}\0{natural_key}".encode(), digest_size=8).digest())[0]


def _register_unit_key_hash(conn: Any) -> None:
    conn.create_function("triofetch_unit_key_hash", 2, unit_key_hash, deterministic=True)


SQLITE_MIGRATIONS: dict[int, list[Step]] = {
    1: [
        """CREATE TABLE artifacts (
            id INTEGER PRIMARY KEY,
            sha256 TEXT NOT NULL UNIQUE,
            size INTEGER NOT NULL CHECK (size >= 0),
            digests TEXT NOT NULL
        )""",
        """CREATE TABLE units (
            id INTEGER PRIMARY KEY,
            type TEXT NOT NULL,
            natural_key TEXT NOT NULL,
            fields TEXT NOT NULL,
            UNIQUE (type, natural_key)
        )""",
        """CREATE TABLE unit_artifacts (
            id INTEGER PRIMARY KEY,
            unit_id INTEGER NOT NULL REFERENCES units (id) ON DELETE CASCADE,
            relative_path TEXT NOT NULL,
            artifact_id INTEGER REFERENCES artifacts (id),
            UNIQUE (unit_id, relative_path)
        )""",
        """CREATE TABLE remote_artifacts (
            id INTEGER PRIMARY KEY,
            unit_artifact_id INTEGER NOT NULL REFERENCES unit_artifacts (id) ON DELETE CASCADE,
            url TEXT NOT NULL,
            size INTEGER CHECK (size >= 0),
            digests TEXT NOT NULL
        )""",
        "CREATE INDEX remote_artifacts_unit_artifact ON remote_artifacts (unit_artifact_id)",
        """CREATE TABLE repositories (
            id INTEGER PRIMARY KEY,
            name TEXT NOT NULL UNIQUE
        )""",
        """CREATE TABLE repository_versions (
            id INTEGER PRIMARY KEY,
            repository_id INTEGER NOT NULL REFERENCES repositories (id) ON DELETE CASCADE,
            number INTEGER NOT NULL,
            complete INTEGER NOT NULL DEFAULT 0,
            UNIQUE (repository_id, number)
        )""",
        """CREATE TABLE version_units (
            version_id INTEGER NOT NULL REFERENCES repository_versions (id) ON DELETE CASCADE,
            unit_id INTEGER NOT NULL REFERENCES units (id),
            PRIMARY KEY (version_id, unit_id)
        ) WITHOUT ROWID""",
    ],
    # The table is rebuilt (SQLite cannot drop a UNIQUE constraint): the store runs its
    # migrations with foreign key enforcement off and checks the keys before committing.
    2: [
        _register_sha256_prefix,
        """CREATE TABLE artifacts_v2 (
            id INTEGER PRIMARY KEY,
            sha256 TEXT NOT NULL,
            sha256_prefix INTEGER NOT NULL,
            size INTEGER NOT NULL CHECK (size >= 0),
            digests TEXT NOT NULL
        )""",
        "INSERT INTO artifacts_v2 (id, sha256, sha256_prefix, size, digests) "
        "SELECT id, sha256, triofetch_sha256_prefix(sha256), size, digests FROM artifacts",
        "DROP TABLE artifacts",
        "ALTER TABLE artifacts_v2 RENAME TO artifacts",
        "CREATE INDEX artifacts_sha256_prefix ON artifacts (sha256_prefix)",
    ],
    # The same for units: UNIQUE (type, natural_key) gives way to an index on key_hash.
    3: [
        _register_unit_key_hash,
        """CREATE TABLE units_v3 (
            id INTEGER PRIMARY KEY,
            type TEXT NOT NULL,
            natural_key TEXT NOT NULL,
            key_hash INTEGER NOT NULL,
            fields TEXT NOT NULL
        )""",
        "INSERT INTO units_v3 (id, type, natural_key, key_hash, fields) "
        "SELECT id, type, natural_key, triofetch_unit_key_hash(type, natural_key), fields "
        "FROM units",
        "DROP TABLE units",
        "ALTER TABLE units_v3 RENAME TO units",
        "CREATE INDEX units_key_hash ON units (key_hash)",
    ],
    4: [
        "ALTER TABLE units ADD COLUMN repo_key TEXT",
        "UPDATE units SET repo_key = json_extract(fields, '$.relative_path') "
        "WHERE type = 'file' AND json_type(fields, '$.relative_path') = 'text'",
        "CREATE INDEX units_repo_key ON units (repo_key) WHERE repo_key IS NOT NULL",
        "ALTER TABLE version_units ADD COLUMN added INTEGER NOT NULL DEFAULT 0",
        "ALTER TABLE repository_versions ADD COLUMN created TEXT",
    ],
    5: ["ALTER TABLE unit_artifacts ADD COLUMN streamed INTEGER NOT NULL DEFAULT 0"],
    6: [
        "ALTER TABLE repositories ADD COLUMN last_number INTEGER NOT NULL DEFAULT 0",
        "UPDATE repositories SET last_number = coalesce((SELECT max(number) "
        "FROM repository_versions v WHERE v.repository_id = repositories.id), 0)",
    ],
}

POSTGRES_MIGRATIONS: dict[int, list[Step]] = {
    1: [
        """CREATE TABLE artifacts (
            id BIGINT GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY,
            sha256 TEXT NOT NULL UNIQUE,
            size BIGINT NOT NULL CHECK (size >= 0),
            digests JSONB NOT NULL
        )""",
        """CREATE TABLE units (
            id BIGINT GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY,
            type TEXT NOT NULL,
            natural_key TEXT NOT NULL,
            fields JSONB NOT NULL,
            UNIQUE (type, natural_key)
        )""",
        """CREATE TABLE unit_artifacts (
            id BIGINT GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY,
            unit_id BIGINT NOT NULL REFERENCES units (id) ON DELETE CASCADE,
            relative_path TEXT NOT NULL,
            artifact_id BIGINT REFERENCES artifacts (id),
            UNIQUE (unit_id, relative_path)
        )""",
        """CREATE TABLE remote_artifacts (
            id BIGINT GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY,
            unit_artifact_id BIGINT NOT NULL REFERENCES unit_artifacts (id) ON DELETE CASCADE,
            url TEXT NOT NULL,
            size BIGINT CHECK (size >= 0),
            digests JSONB NOT NULL
        )""",
        "CREATE INDEX remote_artifacts_unit_artifact ON remote_artifacts (unit_artifact_id)",
        """CREATE TABLE repositories (
            id BIGINT GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY,
            name TEXT NOT NULL UNIQUE
        )""",
        """CREATE TABLE repository_versions (
            id BIGINT GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY,
            repository_id BIGINT NOT NULL REFERENCES repositories (id) ON DELETE CASCADE,
            number INTEGER NOT NULL,
            complete BOOLEAN NOT NULL DEFAULT FALSE,
            UNIQUE (repository_id, number)
        )""",
        """CREATE TABLE version_units (
            version_id BIGINT NOT NULL REFERENCES repository_versions (id) ON DELETE CASCADE,
            unit_id BIGINT NOT NULL REFERENCES units (id),
            PRIMARY KEY (version_id, unit_id)
        )""",
    ],
    # PostgreSQL keeps its unique indexes on sha256 and unit keys: versions 2 and 3 only
    # keep the numbering shared
    2: [],
    3: [],
    4: [
        "ALTER TABLE units ADD COLUMN repo_key TEXT",
        "UPDATE units SET repo_key = fields->>'relative_path' "
        "WHERE type = 'file' AND jsonb_typeof(fields->'relative_path') = 'string'",
        'CREATE INDEX units_repo_key ON units ((repo_key COLLATE "C")) WHERE repo_key IS NOT NULL',
        "ALTER TABLE version_units ADD COLUMN added BOOLEAN NOT NULL DEFAULT FALSE",
        "ALTER TABLE repository_versions ADD COLUMN created TEXT",
    ],
    5: ["ALTER TABLE unit_artifacts ADD COLUMN streamed BOOLEAN NOT NULL DEFAULT FALSE"],
    6: [
        "ALTER TABLE repositories ADD COLUMN last_number INTEGER NOT NULL DEFAULT 0",
        "UPDATE repositories SET last_number = coalesce((SELECT max(number) "
        "FROM repository_versions v WHERE v.repository_id = repositories.id), 0)",
    ],
}


def migrate(conn: Any, migrations: dict[int, list[Step]], placeholder: str, where: str) -> None:
    """Bring the schema of *conn* (inside a locked transaction) to :data:`SCHEMA_VERSION`.

    *placeholder* is the driver's parameter mark (``?`` or ``%s``); *where* names the
    database in the error raised when it was written by a newer triofetch.
    """
    conn.execute(
        "CREATE TABLE IF NOT EXISTS triofetch_schema "
        "(id INTEGER PRIMARY KEY CHECK (id = 1), version INTEGER NOT NULL)"
    )
    row = conn.execute("SELECT version FROM triofetch_schema").fetchone()
    version = 0 if row is None else int(row[0])
    _check_not_newer(version, where)
    for number in range(version + 1, SCHEMA_VERSION + 1):
        for step in migrations[number]:
            if callable(step):
                step(conn)
            else:
                conn.execute(step)
    if version < SCHEMA_VERSION:
        conn.execute(
            f"INSERT INTO triofetch_schema (id, version) VALUES (1, {placeholder}) "
            "ON CONFLICT (id) DO UPDATE SET version = excluded.version",
            (SCHEMA_VERSION,),
        )


def _check_not_newer(version: int, where: str) -> None:
    if version > SCHEMA_VERSION:
        raise SchemaVersionError(
            f"{where} has schema version {version}, written by a newer triofetch; "
            f"this one knows versions up to {SCHEMA_VERSION}: upgrade triofetch"
        )


def check_readable(version: int, where: str) -> None:
    """A store opened read-only is never migrated: its schema must be the current one.

    Raises :class:`SchemaVersionError` for a newer schema, a :class:`StoreError` saying how
    to upgrade an older one.
    """
    _check_not_newer(version, where)
    if version < SCHEMA_VERSION:
        raise StoreError(
            f"{where} has schema version {version}, older than this triofetch's "
            f"{SCHEMA_VERSION}, and a store opened read-only is not upgraded: run a command "
            "that writes (such as 'triofetch sync') on it once to upgrade it"
        )
