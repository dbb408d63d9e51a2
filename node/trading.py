"""Contracts on this node: negotiation with peers, both signatures, the trade report.

A contract is kept on both sides (``role`` says which side this node is) as
the serialized :class:`provex.v1.Contract`; its ``state`` column mirrors the
message's state for queries. Delivery (:mod:`node.delivery`) reads finalized
contracts through :func:`load_contract`.
"""

from __future__ import annotations

import sqlite3
from typing import Literal

from provex.v1 import market_pb2

Role = Literal["buyer", "seller"]

SCHEMA = """
-- Contracts this node is party to; ``contract`` is the serialized provex.v1.Contract.
CREATE TABLE contracts (
    contract_id TEXT PRIMARY KEY,
    role        TEXT NOT NULL CHECK (role IN ('buyer', 'seller')),
    state       INTEGER NOT NULL,
    contract    BLOB NOT NULL,
    updated_at  TEXT NOT NULL
);
CREATE INDEX contracts_by_state ON contracts (state, updated_at);
"""


def load_contract(
    conn: sqlite3.Connection, contract_id: str
) -> tuple[Role, market_pb2.Contract] | None:
    """This node's side of a contract and the contract as kept, or None if unknown."""
    row = conn.execute(
        "SELECT role, contract FROM contracts WHERE contract_id = ?", (contract_id,)
    ).fetchone()
    if row is None:
        return None
    role: Role = "buyer" if row[0] == "buyer" else "seller"
    return role, market_pb2.Contract.FromString(bytes(row[1]))
