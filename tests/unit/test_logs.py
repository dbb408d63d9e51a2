"""provex.logs: the JSON formatter, the request-id context, outbound metadata, access levels."""

from __future__ import annotations

import asyncio
import io
import json
import logging
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from provex.errors import InvalidArgument
from provex.logs import (
    REQUEST_ID_KEY,
    JsonFormatter,
    access_level,
    configure_logging,
    current_method,
    current_request_id,
    new_request_id,
    outbound_metadata,
    request_scope,
    valid_request_id,
)


@pytest.fixture
def restore_root_logger() -> Iterator[None]:
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    yield
    for handler in list(root.handlers):
        root.removeHandler(handler)
    for handler in handlers:
        root.addHandler(handler)
    root.setLevel(level)


def record(message: str, *args: object, **extra: object) -> logging.LogRecord:
    made = logging.LogRecord("provex.test", logging.WARNING, __file__, 1, message, args, None)
    for key, value in extra.items():
        setattr(made, key, value)
    return made


def test_json_line_has_the_fields_and_the_context() -> None:
    formatter = JsonFormatter(service="node", instance="gd-gzde")
    with request_scope("test-123", "/provex.v1.OperatorService/AddMember"):
        line = formatter.format(record("member %s added\nsecond line", "91440100X", count=2))
    assert "\n" not in line
    document = json.loads(line)
    assert document["message"] == "member 91440100X added\nsecond line"
    assert document["level"] == "WARNING"
    assert document["logger"] == "provex.test"
    assert document["service"] == "node"
    assert document["id"] == "gd-gzde"
    assert document["request_id"] == "test-123"
    assert document["method"] == "/provex.v1.OperatorService/AddMember"
    assert document["count"] == 2
    assert document["time"].endswith("+00:00")


@pytest.mark.parametrize(
    ("extra", "shown"),
    [
        ({"size": 12}, 12),
        ({"ok": True}, True),
        ({"peers": ("a", "b")}, ["a", "b"]),
        ({"detail": {"k": 1}}, {"k": 1}),
        ({"path": Path("/x")}, "/x"),
        ({"nothing": None}, None),
    ],
)
def test_extra_fields_become_json_values(extra: dict[str, object], shown: object) -> None:
    document = json.loads(JsonFormatter().format(record("m", **extra)))
    assert document[next(iter(extra))] == shown
    assert "request_id" not in document  # Outside a call.
    assert "service" not in document


def test_exceptions_are_one_field() -> None:
    try:
        raise ValueError("bad value")
    except ValueError:
        made = logging.LogRecord("x", logging.ERROR, __file__, 1, "failed", None, sys.exc_info())
    document = json.loads(JsonFormatter().format(made))
    assert "ValueError: bad value" in document["exception"]
    assert document["message"] == "failed"


@pytest.mark.parametrize(
    ("text", "valid"),
    [
        ("test-123", True),
        ("0af7651916cd43dd8448eb211c80319c", True),
        ("a:b/c.d@e+f=g_h", True),
        ("x" * 128, True),
        ("x" * 129, False),
        ("", False),
        ("has space", False),
        ("line\nbreak", False),
        ('quote"', False),
        ("中文", False),
    ],
)
def test_valid_request_id(text: str, valid: bool) -> None:
    assert valid_request_id(text) is valid
    with request_scope(text) as used:
        assert (used == text) is valid
        assert current_request_id() == used


def test_scopes_nest_and_restore() -> None:
    assert current_request_id() is None
    with request_scope("outer", "/a/B"):
        with request_scope("inner"):
            assert current_request_id() == "inner"
            assert current_method() == "/a/B"  # Unchanged without a method.
        assert current_request_id() == "outer"
    assert current_request_id() is None
    assert current_method() is None


async def test_tasks_started_in_a_scope_keep_its_id() -> None:
    async def later() -> str | None:
        await asyncio.sleep(0)
        return current_request_id()

    with request_scope("trade-7"):
        task = asyncio.create_task(later())
    assert current_request_id() is None
    assert await task == "trade-7"


@pytest.mark.parametrize(
    ("scope", "extra", "expected"),
    [
        (None, (), ()),
        ("r-1", (), ((REQUEST_ID_KEY, "r-1"),)),
        ("r-1", (("k", "v"),), (("k", "v"), (REQUEST_ID_KEY, "r-1"))),
        ("r-1", ((REQUEST_ID_KEY, "old"),), ((REQUEST_ID_KEY, "r-1"),)),
        (None, (("k", "v"),), (("k", "v"),)),
    ],
)
def test_outbound_metadata(
    scope: str | None, extra: tuple[tuple[str, str], ...], expected: tuple[tuple[str, str], ...]
) -> None:
    if scope is None:
        assert outbound_metadata(extra) == expected
    else:
        with request_scope(scope):
            assert outbound_metadata(extra) == expected


def test_new_request_ids_differ() -> None:
    ids = {new_request_id() for _ in range(100)}
    assert len(ids) == 100
    assert all(valid_request_id(one) for one in ids)


@pytest.mark.parametrize(
    ("method", "code", "seconds", "traced", "level"),
    [
        ("/provex.v1.LogService/GetCheckpoint", "OK", 0.01, False, logging.DEBUG),
        ("/provex.v1.LogService/GetCheckpoint", "OK", 0.01, True, logging.INFO),
        ("/provex.v1.LogService/GetCheckpoint", "OK", 1.5, False, logging.INFO),
        ("/provex.v1.LogService/GetCheckpoint", "NOT_FOUND", 0.01, False, logging.INFO),
        ("/provex.v1.LogService/GetCheckpoint", "INTERNAL", 0.01, False, logging.WARNING),
        ("/grpc.health.v1.Health/Check", "NOT_FOUND", 0.01, True, logging.DEBUG),
    ],
)
def test_access_level(method: str, code: str, seconds: float, traced: bool, level: int) -> None:
    assert access_level(method, code, seconds, traced) == level


@pytest.mark.parametrize("log_format", ["json", "text"])
def test_configure_logging_writes_the_request_id(
    log_format: str, restore_root_logger: None
) -> None:
    stream = io.StringIO()
    configure_logging(log_format, service="registry", instance="provex.local", stream=stream)
    with request_scope("test-123"):
        logging.getLogger("provex.test").info("hello %s", "world")
    logging.getLogger("provex.test").debug("not shown at INFO")
    lines = stream.getvalue().splitlines()
    assert len(lines) == 1
    if log_format == "json":
        document = json.loads(lines[0])
        assert (document["request_id"], document["service"], document["message"]) == (
            "test-123",
            "registry",
            "hello world",
        )
    else:
        assert "[test-123] hello world" in lines[0]


def test_configure_logging_refuses_an_unknown_format(restore_root_logger: None) -> None:
    with pytest.raises(InvalidArgument, match="log_format"):
        configure_logging("yaml")
