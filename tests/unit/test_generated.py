"""The committed generated code must be exactly what `make proto` produces now."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

import pytest

PROJECT = Path(__file__).resolve().parents[2]
COMMITTED = PROJECT / "proto" / "provex" / "v1"


def _load_generator() -> ModuleType:
    spec = importlib.util.spec_from_file_location(
        "provex_generate", PROJECT / "proto" / "generate.py"
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_generated_code_is_fresh(tmp_path: Path) -> None:
    generator = _load_generator()
    fresh = {path.name: path.read_bytes() for path in generator.generate(tmp_path)}
    committed = {
        path.name: path.read_bytes()
        for path in COMMITTED.iterdir()
        if path.name.endswith(generator.GENERATED_SUFFIXES)
    }
    assert len(fresh) == 4 * len(generator.SOURCES) > 0
    missing = sorted(set(fresh) - set(committed))
    extra = sorted(set(committed) - set(fresh))
    stale = sorted(
        name for name in fresh.keys() & committed.keys() if fresh[name] != committed[name]
    )
    assert not (missing or extra or stale), (
        f"generated code is stale (run `make proto`): missing={missing} extra={extra} stale={stale}"
    )


@pytest.mark.parametrize(
    "module, service",
    [
        ("registry_pb2_grpc", "TrustServiceServicer"),
        ("registry_pb2_grpc", "EnrollmentServiceServicer"),
        ("registry_pb2_grpc", "DirectoryServiceServicer"),
        ("registry_pb2_grpc", "MemberServiceServicer"),
        ("registry_pb2_grpc", "CatalogServiceServicer"),
        ("registry_pb2_grpc", "CertificateServiceServicer"),
        ("registry_pb2_grpc", "LogServiceServicer"),
        ("supervision_pb2_grpc", "SupervisionServiceServicer"),
        ("node_pb2_grpc", "OperatorServiceServicer"),
        ("node_pb2_grpc", "PeerServiceServicer"),
    ],
)
def test_every_service_of_the_contract_is_generated(module: str, service: str) -> None:
    imported = importlib.import_module(f"provex.v1.{module}")
    assert hasattr(imported, service)


def test_generated_code_matches_installed_runtime() -> None:
    """The dependency floors in pyproject.toml admit the generated code's versions."""
    import grpc
    from google.protobuf import __version__ as protobuf_version

    from provex.v1 import registry_pb2_grpc

    def version(text: str) -> tuple[int, ...]:
        return tuple(int(part) for part in text.split(".")[:3])

    assert version(grpc.__version__) >= version(registry_pb2_grpc.GRPC_GENERATED_VERSION)
    pyproject = (PROJECT / "pyproject.toml").read_text()
    assert f'"grpcio>={registry_pb2_grpc.GRPC_GENERATED_VERSION}"' in pyproject
    gencode = (COMMITTED / "registry_pb2.py").read_text().split("Protobuf Python Version: ")[1]
    gencode_version = gencode.split()[0]
    assert version(protobuf_version) >= version(gencode_version)
    assert f'"protobuf>={gencode_version}' in pyproject
    assert sys.version_info >= (3, 11)
