"""The rules written once in ``triofetch._model``, ``triofetch._urls`` and ``triofetch.errors``.

Each of them used to exist in two or three copies that disagreed; these tests hold the one
copy to the strictest of the old behaviours.
"""

from __future__ import annotations

import pytest

from triofetch import DeclarativeArtifact, DeclarativeUnit, InvalidInput, InvalidUnit
from triofetch._model import check_int, check_number, check_relative_path
from triofetch._urls import basic_authorization, redact_url, split_userinfo
from triofetch.errors import describe_error, error_chain
from triofetch.store import NewUnit, NewUnitArtifact

SHA = "a" * 64

UNSAFE = [
    ("dir\\file", "backslash"),
    ("a/b\x01c", "control character"),
    ("tab\there", "control character"),
    ("del\x7f", "control character"),
    ("nul\x00", "NUL"),
    ("lone\udcff", "not valid Unicode"),
    ("/abs", "absolute"),
    ("a/../b", "'..'"),
    ("a//b", "empty"),
    ("./a", "'.'"),
    ("", "non-empty"),
]


@pytest.mark.parametrize(("path", "why"), UNSAFE)
def test_one_relative_path_rule_for_declarations_and_the_store(path: str, why: str) -> None:
    with pytest.raises(InvalidUnit, match=why):
        check_relative_path(path)
    with pytest.raises(InvalidUnit):
        DeclarativeArtifact("http://127.0.0.1/x", path, digests={"sha256": SHA})
    # the store's own check refused neither backslashes nor control characters before
    with pytest.raises(InvalidUnit):
        NewUnitArtifact(path, SHA)


@pytest.mark.parametrize(
    ("fields", "why"),
    [
        ({1: "v"}, "non-string key 1"),  # (json.dumps makes it "1": read back, it differs)
        ({"a": [{None: 1}]}, "non-string key None"),
        ({"a": "nul\x00"}, "NUL"),
        ({"a": "lone\udcff"}, "not valid Unicode"),
        ({"a": float("nan")}, "not JSON"),
        ({"a": {1, 2}}, "not JSON"),
    ],
)
def test_one_fields_rule_for_declarations_and_the_store(fields: dict, why: str) -> None:
    """A unit declared is one the store accepts: DeclarativeUnit took fields with a
    non-string key, a NUL or a lone surrogate, which the store refused at commit."""
    with pytest.raises(InvalidUnit, match=why):
        DeclarativeUnit("t", ("k",), fields)
    with pytest.raises(InvalidUnit, match=why):
        NewUnit("t", ("k",), fields)


def test_segment_and_path_lengths_count_utf8_bytes() -> None:
    assert check_relative_path("é" * 127) == "é" * 127  # 254 bytes: fits a name
    with pytest.raises(InvalidUnit, match="segment too long: 256 bytes"):
        check_relative_path("é" * 128)
    with pytest.raises(InvalidUnit, match="too long"):
        check_relative_path("/".join(["a" * 200] * 11))  # 2210 bytes


@pytest.mark.parametrize("value", [True, False, 1.0, "1", None])
def test_check_int_refuses_bools_and_non_ints(value: object) -> None:
    with pytest.raises(InvalidInput, match="count must be an integer, got"):
        check_int(value, "count")


def test_check_int_lower_bound_and_error_type() -> None:
    assert check_int(3, "count", least=1) == 3
    with pytest.raises(InvalidUnit, match="count must be an integer >= 1, got 0"):
        check_int(0, "count", least=1, error=InvalidUnit)


@pytest.mark.parametrize("value", [True, -1, float("nan"), float("inf"), "2"])
def test_check_number_refuses(value: object) -> None:
    with pytest.raises(InvalidInput, match="timeout"):
        check_number(value, "timeout")


def test_check_number_positive_none_and_infinity() -> None:
    assert check_number(None, "t", allow_none=True) is None
    assert check_number(0, "t") == 0.0
    with pytest.raises(InvalidInput, match="t must be a positive number, got 0"):
        check_number(0, "t", positive=True)
    assert check_number(float("inf"), "t", allow_inf=True) == float("inf")
    with pytest.raises(InvalidInput, match="t must be a number >= 0, got -inf"):
        check_number(float("-inf"), "t", allow_inf=True)


def test_user_info_is_split_once_the_same_way() -> None:
    assert split_userinfo("https://u%40x:p%3Aw@host:8/p?q") == (
        "https://host:8/p?q",
        ("u@x", "p:w"),
    )
    assert split_userinfo("https://user@host/") == ("https://host/", ("user", ""))
    assert split_userinfo("https://host/a@b") == ("https://host/a@b", None)
    assert basic_authorization("u", "p") == "Basic dTpw"
    assert redact_url("https://u:p@host/x") == "https://***@host/x"
    assert (
        redact_url("postgresql://u@h/db?sslmode=require&password=pw&sslpassword=k#f")
        == "postgresql://***@h/db?sslmode=require&password=***&sslpassword=***#f"
    )
    assert redact_url("postgresql:///db?Password=pw") == "postgresql:///db?Password=***"
    assert redact_url("https://h/x?passwords=1") == "https://h/x?passwords=1"


def test_error_chain_walks_causes_contexts_and_groups_once() -> None:
    root = OSError("certificate verify failed")
    middle = ValueError("middle")
    middle.__cause__ = root
    top = RuntimeError("connection failed")
    top.__context__ = ExceptionGroup("g", [middle])
    root.__context__ = top  # a cycle must not loop
    assert error_chain(top) == [top, middle, root]
    assert describe_error(top) == "connection failed [certificate verify failed]"
