"""``python -m provex.healthprobe`` without a server: addresses it dials and why it refuses.

The probe against running registry and node processes is in
tests/integration/test_backup.py.
"""

from __future__ import annotations

import json
import socket
from datetime import timedelta
from pathlib import Path

import pytest

from provex import pki
from provex.errors import FailedPrecondition
from provex.healthprobe import dialable, main, probe_target
from provex.timestamps import utc_now


@pytest.mark.parametrize(
    ("listen", "dialed"),
    [
        ("0.0.0.0:7400", "127.0.0.1:7400"),
        ("[::]:7401", "127.0.0.1:7401"),
        (":::7500", "127.0.0.1:7500"),
        (":7501", "127.0.0.1:7501"),
        ("127.0.0.1:7501", "127.0.0.1:7501"),
        ("registry.example.cn:7401", "registry.example.cn:7401"),
        ("[::1]:7500", "[::1]:7500"),
    ],
)
def test_a_wildcard_listen_address_is_dialed_on_loopback(listen: str, dialed: str) -> None:
    assert dialable(listen) == dialed


@pytest.mark.parametrize(
    ("endpoints", "message"),
    [
        (None, "not ready: .*run/endpoints.json does not exist"),
        ("{", "not ready: .*is being written"),
        (json.dumps({"service": "witness"}), "unknown service 'witness'"),
    ],
)
def test_probe_target_refuses_what_is_not_a_ready_server(
    tmp_path: Path, endpoints: str | None, message: str
) -> None:
    if endpoints is not None:
        (tmp_path / "run").mkdir()
        (tmp_path / "run" / "endpoints.json").write_text(endpoints)
    with pytest.raises(FailedPrecondition, match=message):
        probe_target(tmp_path)


def test_main_exits_1_with_a_reason(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--state", str(tmp_path), "--timeout", "1"]) == 1
    assert "healthprobe: not ready" in capsys.readouterr().err


def test_main_exits_1_when_nothing_answers(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    _, ca = pki.create_ca("provex.local", utc_now(), timedelta(days=1))
    (tmp_path / "ca.pem").write_bytes(pki.cert_to_pem(ca))
    with socket.socket() as closed:  # a port that was free a moment ago: nobody listens
        closed.bind(("127.0.0.1", 0))
        port = closed.getsockname()[1]
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "endpoints.json").write_text(
        json.dumps(
            {
                "service": "registry",
                "public": f"0.0.0.0:{port}",
                "ca_certificate": str(tmp_path / "ca.pem"),
            }
        )
    )
    assert main(["--state", str(tmp_path), "--timeout", "1"]) == 1
    err = capsys.readouterr().err
    assert f"registry at 127.0.0.1:{port}:" in err
    assert "UNAVAILABLE" in err or "DEADLINE_EXCEEDED" in err
