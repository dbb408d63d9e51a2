"""The supervision console end to end: a live registry with real data, over HTTPS and in Chromium.

A registry of its own (an admin, an auditor, the supervisors of Guangdong
(44) and Shanghai (31)) with two enrolled nodes (Guangzhou 440100, Shanghai
310000) that report members, register datasets and report real
two-signature trades (one an export to Hong Kong, one in an earlier month, one
sold from Shanghai); one member frozen in each province; an accepted risk
assessment in each province whose year of currency is over (overdue); the
Guangzhou node cosigning the latest checkpoint. The helpers that make this
data are test_supervision's and test_witnesses'.

Checked: the JSON endpoints over mutual TLS with an admin and an auditor
certificate; a node certificate (403) and no certificate (401) refused with a
message a person can act on; the Guangdong supervisor seeing Guangdong only;
the security headers; then the page in headless Chromium (Debian's
/usr/bin/chromium driven by Playwright, with the admin's client certificate):
it loads, its charts' SVG bars carry exactly the statistics the API gives,
the tables and the catalog tree show the data, and nothing errors in the
console.
"""

from __future__ import annotations

import json
import ssl
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from provex import checkpoint as notes
from provex import pki, trust
from provex.v1 import supervision_pb2
from registry.console.server import CONTENT_SECURITY_POLICY
from registry.supervision import month_of
from tests.integration import test_supervision as sv
from tests.integration.conftest import run_cli, start_registry, stop_registry
from tests.integration.test_enrollment import Node, enrolled_node
from tests.integration.test_witnesses import cosigner, latest, submit

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_FLAGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
ENDPOINTS = ("whoami", "directory", "checkpoint", "catalog", "statistics", "frozen", "overdue")


@dataclass
class World:
    market: sv.Market
    base: str
    frozen: dict[str, str]  # region prefix -> credit code frozen there
    overdue: dict[str, str]  # region prefix -> holder whose assessment is overdue
    months: set[str]

    def certificate(self, name: str) -> tuple[Path, Path]:
        folder = self.market.state / "admins" / name
        return folder / "cert.pem", folder / "key.pem"


def node_certificate(node: Node, folder: Path) -> tuple[Path, Path]:
    folder.mkdir(parents=True, exist_ok=True)
    cert, key = folder / "cert.pem", folder / "key.pem"
    cert.write_text(node.certificate_pem)
    key.write_bytes(pki.key_to_pem(node.tls_key))
    return cert, key


async def freeze(market: sv.Market, code: str) -> None:
    async with market.admin() as channel:
        await sv.supervision(channel).FreezeMember(
            supervision_pb2.FreezeMemberRequest(credit_code=code, reason="fraud inquiry <b>x</b>"),
            timeout=sv.DEADLINE,
        )


async def lapsed_holder(market: sv.Market, node: Node, region: str) -> str:
    """A holder whose only accepted risk assessment covers a period over a year ago."""
    holder = await sv.add_member(market, node, region)
    stale = sv.assessment(holder, datetime.now(UTC) - timedelta(days=400))
    await sv.review(market, "alice", await sv.file(market, node, stale))
    return holder


@pytest.fixture(scope="module")
async def world(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[World]:
    state = tmp_path_factory.mktemp("console") / "registry"
    init = run_cli("init", "--state", state, "--json")
    assert init.returncode == 0, init.stderr
    digest = json.loads(init.stdout)["trust_root_digest"]
    for name, *role in (
        ("alice", "--role", "admin"),
        ("audrey", "--role", "auditor"),
        ("gd-sup", "--role", "supervisor", "--region", "44"),
        ("sh-sup", "--role", "supervisor", "--region", "31"),
    ):
        added = run_cli("admin", "add", name, *role, "--state", state)
        assert added.returncode == 0, added.stderr
    root = trust.load_trust_root(
        (state / "trust" / "root-1.json").read_bytes(), digest, datetime.now(UTC)
    ).root
    running = await start_registry(state, digest)
    try:
        assert "console" in running.endpoints, running.endpoints
        gz = await enrolled_node(running, state, "cs-gz", "440100")
        sh = await enrolled_node(running, state, "cs-sh", "310000")
        market = sv.Market(running, state, root, gz, sh)
        gz_seller = await sv.add_member(market, gz, "440100")
        sh_member = await sv.add_member(market, sh, "310000")
        abroad = await sv.add_member(market, sh, "310000", country="HK")
        earlier = datetime.now(UTC) - timedelta(days=45)
        for buyer, options in (
            (sh_member, {"fen": 250_000}),
            (abroad, {"country": "HK", "fen": 90_000}),
            (sh_member, {"fen": 120_000, "agreed_at": earlier}),
        ):
            dataset = await sv.add_dataset(market, gz, gz_seller, individuals=10)
            await sv.trade(market, dataset, gz_seller, buyer, **options)
        sh_dataset = await sv.add_dataset(market, sh, sh_member, individuals=10)
        envelope = sv.signed_contract(sh, gz, sh_dataset, sh_member, gz_seller, fen=70_000)
        await sv.report(market, sh, envelope)
        frozen = {
            "44": await sv.add_member(market, gz, "440100"),
            "31": await sv.add_member(market, sh, "310000"),
        }
        for code in frozen.values():
            await freeze(market, code)
        overdue = {
            "44": await lapsed_holder(market, gz, "440100"),
            "31": await lapsed_holder(market, sh, "310000"),
        }
        note = await latest(running)
        await submit(running, gz, notes.add_signature(note, cosigner(gz)))
        yield World(
            market,
            f"https://{running.endpoints['console']}",
            frozen,
            overdue,
            {month_of(datetime.now(UTC)), month_of(earlier)},
        )
    finally:
        assert await stop_registry(running) == 0


# ---------------------------------------------------------------- HTTPS clients


def client_tls(world: World, certificate: tuple[Path, Path] | None) -> ssl.SSLContext:
    context = ssl.create_default_context(cadata=world.market.registry.ca_pem.decode())
    if certificate is not None:
        context.load_cert_chain(*certificate)
    return context


async def get(
    world: World, path: str, certificate: tuple[Path, Path] | None
) -> tuple[int, Any, aiohttp.typedefs.LooseHeaders]:
    connector = aiohttp.TCPConnector(ssl=client_tls(world, certificate))
    timeout = aiohttp.ClientTimeout(total=20)
    async with (
        aiohttp.ClientSession(connector=connector, timeout=timeout) as session,
        session.get(world.base + path) as response,
    ):
        text = await response.text()
        body = json.loads(text) if response.content_type == "application/json" else text
        return response.status, body, dict(response.headers)


async def api(world: World, what: str, who: str = "alice") -> Any:
    status, body, _ = await get(world, f"/api/{what}", world.certificate(who))
    assert status == 200, body
    return body


def totals(series: list[dict[str, Any]]) -> dict[str, tuple[int, int, int]]:
    return {p["key"]: (p["trades"], p["exports"], p["value_fen"]) for p in series}


# ---------------------------------------------------------------- the JSON endpoints


async def test_an_admin_reads_every_endpoint(world: World) -> None:
    me = await api(world, "whoami")
    assert me["role"] == "admin" and me["scope"] == ""
    nodes = {n["node_id"]: n for n in (await api(world, "directory"))["nodes"]}
    gz, sh = world.market.gz.node_id, world.market.sh.node_id
    assert set(nodes) == {gz, sh}
    assert nodes[gz]["health"] == "ok" and nodes[gz]["last_cosigned_size"] > 0
    assert nodes[sh]["health"] == "warning" and "never cosigned" in nodes[sh]["health_reason"]
    assert nodes[gz]["certificate_days_left"] > 14 and nodes[gz]["status"] == "active"
    checkpoint = await api(world, "checkpoint")
    assert checkpoint["size"] >= nodes[gz]["last_cosigned_size"]
    assert checkpoint["origin"] == "provex.local/log"
    assert [c["node_id"] for c in checkpoint["cosignatures"]] in ([], [gz])
    stats = await api(world, "statistics")
    assert totals(stats["by_region"]) == {
        "440100": (3, 1, 460_000),
        "310000": (1, 0, 70_000),
    }
    assert set(totals(stats["by_month"])) == world.months
    assert sum(t for t, _, _ in totals(stats["by_month"]).values()) == 4
    assert totals(stats["by_grade"]) == {"general": (4, 1, 530_000)}
    frozen = (await api(world, "frozen"))["members"]
    assert {m["credit_code"] for m in frozen} == set(world.frozen.values())
    assert all(m["reason"] == "fraud inquiry <b>x</b>" for m in frozen)
    assert all(m["actor"].endswith("/admin/alice") and m["frozen_at"] for m in frozen)
    overdue = (await api(world, "overdue"))["assessments"]
    assert {a["holder"] for a in overdue} == set(world.overdue.values())
    assert {a["state"] for a in overdue} == {"accepted"}
    catalog = await api(world, "catalog")
    assert catalog["version"] == 1 and catalog["entries"] > 10
    top = {node["code"]: node for node in catalog["tree"]}
    geo = {child["code"]: child for child in top["geo"]["children"]}
    assert geo["geo.mapping"]["entry"]["min_grade"] in ("important", "core")


async def test_an_auditor_reads_too_and_headers_are_strict(world: World) -> None:
    status, body, headers = await get(world, "/api/statistics", world.certificate("audrey"))
    assert status == 200 and body["rows"]
    assert headers["Content-Security-Policy"] == CONTENT_SECURITY_POLICY
    assert "script-src 'self'" in CONTENT_SECURITY_POLICY
    assert headers["X-Content-Type-Options"] == "nosniff"
    status, page, headers = await get(world, "/", world.certificate("audrey"))
    assert status == 200 and '<script src="/static/console.js" defer>' in page
    assert headers["Content-Type"].startswith("text/html")
    assert headers["Content-Security-Policy"] == CONTENT_SECURITY_POLICY
    status, body, _ = await get(world, "/api/nothing", world.certificate("audrey"))
    assert status == 404 and "/api/directory" in body["error"]
    status, _, _ = await get(world, "/static/..%2Fserver.py", world.certificate("audrey"))
    assert status == 404


async def test_nodes_and_anonymous_callers_are_refused(world: World, tmp_path: Path) -> None:
    node = node_certificate(world.market.gz, tmp_path / "gz")
    status, body, _ = await get(world, "/api/statistics", node)
    assert status == 403, body
    assert "for admins, auditors and supervisors" in body["error"]
    assert world.market.gz.node_id in body["error"]
    status, page, headers = await get(world, "/", node)
    assert status == 403 and "not allowed" in page and "admin add" in page
    assert headers["Content-Security-Policy"] == CONTENT_SECURITY_POLICY
    status, body, _ = await get(world, "/api/frozen", None)
    assert status == 401 and "needs an admin client certificate" in body["error"]
    status, page, _ = await get(world, "/", None)
    assert status == 401 and "client certificate needed" in page


async def test_a_guangdong_supervisor_sees_guangdong_only(world: World) -> None:
    me = await api(world, "whoami", "gd-sup")
    assert me["role"] == "supervisor" and me["scope"] == "44"
    nodes = (await api(world, "directory", "gd-sup"))["nodes"]
    assert [n["node_id"] for n in nodes] == [world.market.gz.node_id]
    stats = await api(world, "statistics", "gd-sup")
    assert set(totals(stats["by_region"])) == {"440100"}
    assert {r["region_code"] for r in stats["rows"]} == {"440100"}
    frozen = (await api(world, "frozen", "gd-sup"))["members"]
    assert [m["credit_code"] for m in frozen] == [world.frozen["44"]]
    overdue = (await api(world, "overdue", "gd-sup"))["assessments"]
    assert {a["holder"] for a in overdue} == {world.overdue["44"]}
    shanghai = await api(world, "statistics", "sh-sup")
    assert set(totals(shanghai["by_region"])) == {"310000"}


# ---------------------------------------------------------------- the page in Chromium


def require_chromium() -> None:
    if not CHROMIUM.exists():
        pytest.fail(
            f"{CHROMIUM} is missing: the console test needs Debian's Chromium. Install it with "
            "`sudo apt-get install -y chromium` (`make test` does this when it is missing)."
        )


async def test_the_page_draws_the_data_in_chromium(world: World) -> None:
    require_chromium()
    from playwright.async_api import async_playwright

    stats = await api(world, "statistics")
    cert, key = world.certificate("alice")
    problems: list[str] = []
    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(
            executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_FLAGS
        )
        try:
            context = await browser.new_context(
                ignore_https_errors=True,  # The federation CA is not in Chromium's trust store.
                client_certificates=[
                    {"origin": world.base, "certPath": str(cert), "keyPath": str(key)}
                ],
            )
            page = await context.new_page()
            page.on(
                "console",
                lambda m: (
                    problems.append(f"console {m.type}: {m.text}")
                    if m.type in ("error", "warning")
                    else None
                ),
            )
            page.on("pageerror", lambda e: problems.append(f"page error: {e}"))
            page.on("requestfailed", lambda r: problems.append(f"request failed: {r.url}"))
            response = await page.goto(world.base + "/", wait_until="load")
            assert response is not None and response.status == 200
            await page.wait_for_selector("body[data-loaded]", timeout=20_000)
            assert await page.get_attribute("body", "data-loaded") == "ok"
            assert await page.is_hidden("#errors")
            for chart, series, names in (
                ("month", stats["by_month"], ("trades", "exports")),
                ("region", stats["by_region"], ("trades", "exports")),
                ("grade", stats["by_grade"], ("trades", "exports")),
                ("value", stats["by_month"], ("value_fen",)),
            ):
                bars = await page.eval_on_selector_all(
                    f"#chart-{chart} svg rect.bar",
                    "bars => bars.map(b => [b.dataset.key, b.dataset.series,"
                    " Number(b.dataset.value), Number(b.getAttribute('height'))])",
                )
                drawn = {(k, s): v for k, s, v, _ in bars}
                expected = {(p["key"], s): p[s] for p in series for s in names}
                assert drawn == expected, (chart, bars)
                assert all((h > 0) == (v > 0) for _, _, v, h in bars), bars
            whoami = await page.text_content("#whoami")
            assert whoami is not None and "alice (admin)" in whoami
            directory = await page.text_content("#directory tbody")
            assert directory is not None
            assert world.market.gz.node_id in directory and world.market.sh.node_id in directory
            frozen = await page.text_content("#frozen tbody")
            assert frozen is not None and all(c in frozen for c in world.frozen.values())
            # The reason is text, not markup: no <b> element was made from it.
            assert "<b>x</b>" in frozen
            assert await page.locator("#frozen tbody b").count() == 0
            overdue = await page.text_content("#overdue tbody")
            assert overdue is not None and all(h in overdue for h in world.overdue.values())
            assert await page.locator('#catalog li[data-code="geo.mapping"]').count() == 1
            witnesses = await page.text_content('#checkpoint [data-field="size"]')
            assert witnesses is not None and int(witnesses) > 0
            await context.close()
        finally:
            await browser.close()
    assert problems == []
