"""The README's demo: ``deploy/federation.py --exit-after-walkthrough`` tells the whole story.

Real processes (a registry and three nodes) run every step of the walkthrough;
the test checks the story's outcomes in its output and that everything stops
cleanly (exit 0).
"""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

OUTCOMES = (
    "query '交通': answered by gd-gzde, gd-szde, sh-sde",
    "FINALIZED on both nodes, one envelope with 2 signatures",
    "SHA-256 equals the certificate's content digest: yes",
    "registry refused the certificate",
    "refused (FAILED_PRECONDITION)",
    "under EXPORT_MECHANISM_ASSESSMENT",
    "suspended federation-wide by a logged statement",
    "reinstated after",
    "PERMISSION_DENIED",
    "is SUSPENDED",
    "log audited:",
    "log verified: every entry and checkpoint holds",
    "Supervision console: https://",
    "Prometheus metrics: registry http://",
    "registry stopped (exit 0)",
)


async def test_the_walkthrough_runs_to_the_end(tmp_path: Path) -> None:
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        str(ROOT / "deploy" / "federation.py"),
        "--exit-after-walkthrough",
        "--workdir",
        str(tmp_path / "federation"),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    output, _ = await asyncio.wait_for(process.communicate(), 300)
    text = output.decode()
    assert process.returncode == 0, text
    missing = [outcome for outcome in OUTCOMES if outcome not in text]
    assert not missing, f"missing {missing} in:\n{text}"
    assert "exit 0" in text and "(exit 1" not in text and "Traceback" not in text, text
