"""Configuration of the command line (#19, point 4), end to end as subprocesses.

One precedence, flag > environment > config file > default, seen both in what a command
does (the store it writes, the token it sends) and in ``triofetch config``; the config
file's checks (status 2 naming the file, the key and what was expected); secrets redacted;
libpq's own variables reaching PostgreSQL through a URL passed on unchanged.  The refusals
of a bad config file, a missing one and a bad environment value come before any work: they
run the same main() in process (tests/_cli_helpers.py, run_cli_in_process).
"""

from __future__ import annotations

import socket
from pathlib import Path
from typing import Any

import pytest

from tests._cli_helpers import publish, run_cli, run_cli_in_process
from triofetch.testing import FaultServer, PostgresServer

TOKEN = "tok-config-9d8c7b6a-secret"
FILES = {"a.txt": b"alpha\n"}


def _settings(*args: str | Path, env: dict[str, str] | None = None) -> dict[str, Any]:
    result = run_cli("config", "--json", *args, env=env)
    assert result.code == 0, result
    settings: dict[str, Any] = result.json()["settings"]
    return settings


def test_flag_beats_environment_beats_file_beats_default(tmp_path: Path) -> None:
    config = tmp_path / "config.toml"
    config.write_text("connections = 4\nretries = 7\nmax-time = 30\n")
    env = {"TRIOFETCH_RETRIES": "5"}
    got = _settings("--config", config, "--max-time", "9", env=env)
    assert got["connections"] == {"value": 4, "source": "file", "from": str(config)}
    assert got["retries"] == {"value": 5, "source": "env", "from": "$TRIOFETCH_RETRIES"}
    assert got["max-time"] == {"value": 9.0, "source": "flag", "from": "--max-time"}
    assert got["speed-limit"] == {"value": None, "source": "default", "from": ""}
    assert got["root"]["source"] == "default"

    human = run_cli("config", "--config", config, env=env)
    assert human.code == 0, human
    assert f"connections         4  (file {config})" in human.out
    assert "retries             5  (env $TRIOFETCH_RETRIES)" in human.out


def test_the_root_from_the_file_the_environment_and_the_flag(
    http_server: FaultServer, tmp_path: Path
) -> None:
    """Which store a sync writes: each level replaces the one below it."""
    url = publish(http_server, FILES)
    home = tmp_path / "xdg"
    (home / "triofetch").mkdir(parents=True)
    (home / "triofetch" / "config.toml").write_text(f'root = "{tmp_path / "from-file"}"\n')
    env = {"XDG_CONFIG_HOME": str(home)}
    sync = ("sync", url, "--repository", "r")
    assert run_cli(*sync, env=env).code == 0
    assert (tmp_path / "from-file" / "triofetch.sqlite3").exists()
    env_root = {**env, "TRIOFETCH_ROOT": str(tmp_path / "from-env")}
    assert run_cli(*sync, env=env_root).code == 0
    assert (tmp_path / "from-env" / "triofetch.sqlite3").exists()
    assert run_cli(*sync, "--root", tmp_path / "from-flag", env=env_root).code == 0
    assert (tmp_path / "from-flag" / "triofetch.sqlite3").exists()
    listed = run_cli("list", "--repository", "r", env=env)
    assert listed.code == 0, listed
    assert "a.txt" in listed.out


def test_triofetch_db_from_the_environment(http_server: FaultServer, tmp_path: Path) -> None:
    url = publish(http_server, FILES)
    db = tmp_path / "elsewhere.sqlite3"
    env = {"TRIOFETCH_DB": f"sqlite:///{db}"}
    result = run_cli("sync", url, "--repository", "r", "--root", tmp_path / "root", env=env)
    assert result.code == 0, result
    assert db.exists()
    assert not (tmp_path / "root" / "triofetch.sqlite3").exists()


def test_config_file_errors_name_the_file_the_key_and_what_was_expected(
    tmp_path: Path,
) -> None:
    config = tmp_path / "config.toml"
    cases = {
        "conections = 4\n": "unknown key 'conections' (known: root, db",
        'connections = "4"\n': "connections: expected an integer >= 1, got '4'",
        "connections = 0\n": "connections: expected an integer >= 1, got 0",
        "retries = 1.5\n": "retries: expected an integer >= 0, got 1.5",
        "rate-limit = true\n": "rate-limit: expected a number > 0, got True",
        "proxy = 3\n": "proxy: expected a string, got 3",
        "[connections]\n": "connections: expected an integer >= 1, got {}",
        "connections = \n": "not valid TOML",
    }
    for text, words in cases.items():
        config.write_text(text)
        result = run_cli_in_process("list", "--repository", "r", "--config", config, "--json")
        assert result.code == 2, (text, result)
        assert f"triofetch: error: config file {config}: {words}" in result.err, result
        assert result.json()["error"]["kind"] == "config"
    # the default file is read too, and checked the same way
    (tmp_path / "triofetch").mkdir()
    (tmp_path / "triofetch" / "config.toml").write_text("retries = -1\n")
    default = run_cli_in_process(
        "list", "--repository", "r", env={"XDG_CONFIG_HOME": str(tmp_path)}
    )
    assert default.code == 2, default
    assert "config.toml: retries: expected an integer >= 0, got -1" in default.err


def test_a_missing_config_file(tmp_path: Path) -> None:
    missing = run_cli_in_process("config", "--config", tmp_path / "nope.toml")
    assert missing.code == 2, missing
    assert f"--config: no such file: '{tmp_path / 'nope.toml'}'" in missing.err
    # the default one may be missing
    fine = run_cli("config", "--json", env={"XDG_CONFIG_HOME": str(tmp_path)})
    assert fine.code == 0, fine
    assert fine.json()["config_file"] is None


def test_a_bad_environment_value_is_a_usage_error(tmp_path: Path) -> None:
    result = run_cli_in_process(
        "sync", "x", "--repository", "r", "--root", tmp_path, env={"TRIOFETCH_CONNECTIONS": "0"}
    )
    assert result.code == 2, result
    assert "$TRIOFETCH_CONNECTIONS: expected an integer >= 1, got 0" in result.err


def test_a_bad_file_setting_names_where_it_came_from(tmp_path: Path) -> None:
    """A setting naming a file that is not there is refused under the name the user gave
    it: the config file and key, the variable, or the flag (the message used to name the
    flag, --ca-cert or --client-cert, whichever of them the value came from)."""
    config = tmp_path / "config.toml"
    config.write_text(f'ca-cert = "{tmp_path / "no-ca.pem"}"\n')
    sync = ("sync", "http://127.0.0.1:9/PULP_MANIFEST", "--repository", "r", "--json")
    cases = (
        (
            ("--config", config),
            {},
            f"config file {config}: ca-cert: no such file or directory",
            "config",
        ),
        (
            (),
            {"TRIOFETCH_CLIENT_CERT": str(tmp_path / "no-cert.pem")},
            "$TRIOFETCH_CLIENT_CERT: no such file or directory",
            "config",
        ),
        (
            (),
            {"TRIOFETCH_BEARER_TOKEN_FILE": str(tmp_path / "no-token")},
            "$TRIOFETCH_BEARER_TOKEN_FILE: cannot read",
            "config",
        ),
        (
            ("--ca-cert", tmp_path / "no-ca.pem", "--config", config),
            {},
            "--ca-cert: no such file or directory",
            "usage",
        ),
    )
    for extra, env, expected, kind in cases:
        root = tmp_path / "root"
        result = run_cli_in_process(*sync, "--root", root, *extra, env=env)
        assert result.code == 2, result
        assert result.err.startswith(f"triofetch: error: {expected}"), result
        assert result.json()["error"]["kind"] == kind, result
        assert not root.exists()


def test_secrets_are_redacted(tmp_path: Path) -> None:
    config = tmp_path / "config.toml"
    config.write_text(
        'db = "postgresql://mirror:db-pass-1234@127.0.0.1:5432/store"\n'
        'proxy = "http://user:proxy-pass-5678@127.0.0.1:3128"\n'
    )
    env = {"TRIOFETCH_BEARER_TOKEN": TOKEN}
    for extra in ((), ("--json",)):
        result = run_cli("config", "--config", config, *extra, env=env)
        assert result.code == 0, result
        text = result.out + result.err
        for secret in (TOKEN, "db-pass-1234", "proxy-pass-5678"):
            assert secret not in text
        assert "postgresql://***@127.0.0.1:5432/store" in text
        assert "***" in text
    got = _settings("--config", config, env=env)
    assert got["bearer-token"] == {
        "value": "***",
        "source": "env",
        "from": "$TRIOFETCH_BEARER_TOKEN",
    }


def test_a_password_in_the_query_of_a_db_url_is_redacted(tmp_path: Path) -> None:
    """libpq takes ``?password=`` (and ``sslpassword=``) as it takes ``user:password@``: the
    value is a secret wherever the URL is shown, in ``config`` and in the error line of a
    database that cannot be reached (it used to be printed whole)."""
    with socket.socket() as sock:  # a port nothing listens on: refused at once
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    url = f"postgresql://mirror@127.0.0.1:{port}/store?password=q-pass-1234&sslpassword=k-pass-5678"
    secrets = ("q-pass-1234", "k-pass-5678")
    for extra in ((), ("--json",)):
        shown = run_cli("config", *extra, env={"TRIOFETCH_DB": url})
        assert shown.code == 0, shown
        assert not any(secret in shown.out + shown.err for secret in secrets), shown
        assert "?password=***&sslpassword=***" in shown.out, shown
    failed = run_cli("list", "--repository", "r", "--root", tmp_path, "--db", url, "--json")
    assert failed.code == 2, failed
    assert not any(secret in failed.out + failed.err for secret in secrets), failed
    assert "password=***" in failed.err, failed


def test_the_bearer_token_precedence(http_server: FaultServer, tmp_path: Path) -> None:
    """--bearer-token-file > $TRIOFETCH_BEARER_TOKEN > the config file's bearer-token-file;
    a proxy password is taken from a config file (not from a flag)."""
    url = publish(http_server, FILES)
    good, stale = tmp_path / "good", tmp_path / "stale"
    good.write_text(TOKEN)
    stale.write_text("stale-token")
    http_server.require_bearer({TOKEN})
    config = tmp_path / "config.toml"
    config.write_text(f'bearer-token-file = "{stale}"\n')
    base = ("sync", url, "--repository", "r", "--config", config)
    assert run_cli(*base, "--root", tmp_path / "r1").code == 2  # the file's stale token
    with_env = run_cli(*base, "--root", tmp_path / "r2", env={"TRIOFETCH_BEARER_TOKEN": TOKEN})
    assert with_env.code == 0, with_env
    flag = run_cli(
        *base, "--root", tmp_path / "r3", "--bearer-token-file", good,
        env={"TRIOFETCH_BEARER_TOKEN": "wrong"},
    )  # fmt: skip
    assert flag.code == 0, flag
    config.write_text(f'bearer-token-file = "{good}"\n')
    assert run_cli(*base, "--root", tmp_path / "r4").code == 0


def test_a_proxy_with_a_password_from_the_file_is_used(tmp_path: Path) -> None:
    """Refused as a flag, a proxy URL with a password is taken from the config file (the
    proxy does not listen: the sync fails reaching it, never printing the password)."""
    config = tmp_path / "config.toml"
    config.write_text('proxy = "http://user:proxy-pass-5678@127.0.0.1:9"\n')
    result = run_cli(
        "-vvv", "sync", "http://127.0.0.1:8/PULP_MANIFEST", "--repository", "r",
        "--root", tmp_path / "root", "--config", config, "--retries", "0",
    )  # fmt: skip
    assert result.code == 2, result
    assert "a password is not taken" not in result.err
    assert "127.0.0.1:9" in result.err  # it went to the proxy
    assert "proxy-pass-5678" not in result.out + result.err


@pytest.mark.postgres
def test_libpq_variables_reach_postgresql(
    http_server: FaultServer, tmp_path: Path, postgres_server: PostgresServer, postgres_dsn: str
) -> None:
    """A URL without host, user nor password is passed to libpq unchanged: PGHOST, PGPORT,
    PGUSER and PGPASSWORD, or a PGSERVICE entry, say where the database is."""
    url = publish(http_server, FILES)
    dbname = postgres_dsn.rsplit("/", 1)[1]
    env = {
        "PGHOST": "127.0.0.1",
        "PGPORT": str(postgres_server.port),
        "PGUSER": postgres_server.superuser,
        "PGPASSWORD": "pg-pass-4321",
    }
    root = tmp_path / "root"
    synced = run_cli(
        "-vv", "sync", url, "--repository", "r", "--root", root,
        "--db", f"postgresql:///{dbname}", env=env,
    )  # fmt: skip
    assert synced.code == 0, synced
    assert "pg-pass-4321" not in synced.out + synced.err
    services = tmp_path / "pg_service.conf"
    services.write_text(
        f"[mirror]\nhost=127.0.0.1\nport={postgres_server.port}\n"
        f"user={postgres_server.superuser}\ndbname={dbname}\n"
    )
    listed = run_cli(
        "list", "--repository", "r", "--root", root,
        env={"PGSERVICEFILE": str(services), "PGSERVICE": "mirror",
             "TRIOFETCH_DB": "postgresql://"},
    )  # fmt: skip
    assert listed.code == 0, listed
    assert "a.txt" in listed.out
