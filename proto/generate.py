"""Generate the committed Python code of the wire contract from proto/provex/v1/*.proto.

The one documented command is ``make proto`` (it runs this file with the
project's virtual environment). It uses the pinned grpcio-tools (protoc and the
gRPC plugin) and mypy-protobuf (the .pyi stubs) from the ``test``/``dev``
extras, so the output is the same on every machine. ``tests/unit/test_generated.py``
regenerates into a temporary folder and fails when the committed files differ.
"""

from __future__ import annotations

import shutil
import sys
import tempfile
from pathlib import Path

from grpc_tools import protoc  # the pinned grpcio-tools

PROTO_ROOT = Path(__file__).resolve().parent
SOURCES = sorted((PROTO_ROOT / "provex" / "v1").glob("*.proto"))
GENERATED_SUFFIXES = ("_pb2.py", "_pb2.pyi", "_pb2_grpc.py", "_pb2_grpc.pyi")


def _plugin(name: str) -> str:
    """Path of a protoc plugin installed beside this Python (the venv's bin folder)."""
    beside = Path(sys.executable).parent / name
    found = str(beside) if beside.exists() else shutil.which(name)
    if found is None:
        raise SystemExit(f"{name} not found: install the test extra (pip install -e '.[test]')")
    return found


def generate(out_dir: Path) -> list[Path]:
    """Run protoc over every .proto into ``out_dir``; return the generated files."""
    include = Path(protoc.__file__).parent / "_proto"
    args = [
        "protoc",
        f"-I{PROTO_ROOT}",
        f"-I{include}",
        f"--plugin=protoc-gen-mypy={_plugin('protoc-gen-mypy')}",
        f"--plugin=protoc-gen-mypy_grpc={_plugin('protoc-gen-mypy_grpc')}",
        f"--python_out={out_dir}",
        f"--grpc_python_out={out_dir}",
        f"--mypy_out={out_dir}",
        f"--mypy_grpc_out={out_dir}",
        *[str(source.relative_to(PROTO_ROOT)) for source in SOURCES],
    ]
    if protoc.main(args) != 0:
        raise SystemExit("protoc failed")
    return sorted(
        path
        for path in (out_dir / "provex" / "v1").iterdir()
        if path.name.endswith(GENERATED_SUFFIXES)
    )


def main() -> None:
    target = PROTO_ROOT / "provex" / "v1"
    for stale in target.iterdir():
        if stale.name.endswith(GENERATED_SUFFIXES):
            stale.unlink()
    with tempfile.TemporaryDirectory() as scratch:
        for path in generate(Path(scratch)):
            shutil.copyfile(path, target / path.name)
            print(f"wrote {(target / path.name).relative_to(PROTO_ROOT.parent)}")


if __name__ == "__main__":
    main()
