"""One hierarchy for every error Provex raises on purpose, and its gRPC status codes.

Domain code raises these; servers turn them into status codes in one place
(:func:`status_code_for`). Anything else that escapes a handler is a bug: it is
logged with its traceback and answered as INTERNAL without the exception text.
"""

from __future__ import annotations

import grpc


class ProvexError(Exception):
    """Base of every error Provex raises on purpose."""

    code: grpc.StatusCode = grpc.StatusCode.INTERNAL


class InvalidArgument(ProvexError):
    """A field is malformed; the message names the field."""

    code = grpc.StatusCode.INVALID_ARGUMENT


class NotFound(ProvexError):
    """The named object does not exist."""

    code = grpc.StatusCode.NOT_FOUND


class AlreadyExists(ProvexError):
    """The object exists already and may not be created twice."""

    code = grpc.StatusCode.ALREADY_EXISTS


class FailedPrecondition(ProvexError):
    """A rule refused the request; the message names the rule."""

    code = grpc.StatusCode.FAILED_PRECONDITION


class PermissionDenied(ProvexError):
    """The caller is known but may not do this."""

    code = grpc.StatusCode.PERMISSION_DENIED


class Unauthenticated(ProvexError):
    """The caller presented no identity, or one that is not valid."""

    code = grpc.StatusCode.UNAUTHENTICATED


class ResourceExhausted(ProvexError):
    """A request exceeds a size or rate limit."""

    code = grpc.StatusCode.RESOURCE_EXHAUSTED


class Unavailable(ProvexError):
    """A dependency (the registry, a peer) cannot be reached right now; retry later."""

    code = grpc.StatusCode.UNAVAILABLE


class VerificationError(ProvexError):
    """A signature, proof, checkpoint, envelope, bundle or trust root failed to verify.

    Every way a verification can fail raises this one class, so callers need
    a single ``except``.
    """

    code = grpc.StatusCode.FAILED_PRECONDITION


def status_code_for(error: BaseException) -> grpc.StatusCode:
    """The gRPC status code that answers ``error``: its own for a ProvexError, else INTERNAL."""
    if isinstance(error, ProvexError):
        return error.code
    return grpc.StatusCode.INTERNAL


_ERROR_FOR_CODE: dict[grpc.StatusCode, type[ProvexError]] = {
    cls.code: cls
    for cls in (
        InvalidArgument,
        NotFound,
        AlreadyExists,
        FailedPrecondition,
        PermissionDenied,
        Unauthenticated,
        ResourceExhausted,
        Unavailable,
    )
}


def error_for_status(code: grpc.StatusCode, message: str) -> ProvexError:
    """The ProvexError a client raises for a status it received (the inverse mapping)."""
    return _ERROR_FOR_CODE.get(code, ProvexError)(message)
