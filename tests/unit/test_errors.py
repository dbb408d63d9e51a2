"""One error hierarchy, one mapping to gRPC status codes."""

from __future__ import annotations

import grpc
import pytest

from provex import errors

MAPPING: dict[str, tuple[type[errors.ProvexError], grpc.StatusCode]] = {
    "invalid argument": (errors.InvalidArgument, grpc.StatusCode.INVALID_ARGUMENT),
    "not found": (errors.NotFound, grpc.StatusCode.NOT_FOUND),
    "already exists": (errors.AlreadyExists, grpc.StatusCode.ALREADY_EXISTS),
    "failed precondition": (errors.FailedPrecondition, grpc.StatusCode.FAILED_PRECONDITION),
    "permission denied": (errors.PermissionDenied, grpc.StatusCode.PERMISSION_DENIED),
    "unauthenticated": (errors.Unauthenticated, grpc.StatusCode.UNAUTHENTICATED),
    "resource exhausted": (errors.ResourceExhausted, grpc.StatusCode.RESOURCE_EXHAUSTED),
    "unavailable": (errors.Unavailable, grpc.StatusCode.UNAVAILABLE),
    "verification": (errors.VerificationError, grpc.StatusCode.FAILED_PRECONDITION),
}


@pytest.mark.parametrize("error_class, code", MAPPING.values(), ids=MAPPING.keys())
def test_each_error_maps_to_its_status(
    error_class: type[errors.ProvexError], code: grpc.StatusCode
) -> None:
    error = error_class("field x is wrong")
    assert isinstance(error, errors.ProvexError)
    assert errors.status_code_for(error) is code


def test_anything_else_is_internal() -> None:
    assert errors.status_code_for(KeyError("boom")) is grpc.StatusCode.INTERNAL


@pytest.mark.parametrize(
    "error_class, code",
    [case for name, case in MAPPING.items() if name != "verification"],
    ids=[name for name in MAPPING if name != "verification"],
)
def test_clients_get_the_same_class_back(
    error_class: type[errors.ProvexError], code: grpc.StatusCode
) -> None:
    error = errors.error_for_status(code, "message")
    assert type(error) is error_class
    assert str(error) == "message"


def test_unknown_status_becomes_the_base_class() -> None:
    assert type(errors.error_for_status(grpc.StatusCode.DATA_LOSS, "x")) is errors.ProvexError
