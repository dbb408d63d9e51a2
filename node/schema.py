"""The node's database schema: one list of migrations, oldest first (append only).

Each domain module owns the SQL of its tables (``SCHEMA``); migration 1
creates them all. Later changes are new migrations appended here; never
edit one that has shipped (see :mod:`provex.storage`).
"""

from __future__ import annotations

from node import datasets, delivery, listings, members, outbox, registry_link, search, sync, trading
from provex.storage import Migration

MIGRATIONS: tuple[Migration, ...] = (
    Migration(
        1,
        "members, datasets, listings and search, outbox, directory, sync",
        "\n".join(
            (
                members.SCHEMA,
                datasets.SCHEMA,
                listings.SCHEMA,
                search.SCHEMA,
                outbox.SCHEMA,
                registry_link.SCHEMA,
                sync.SCHEMA,
            )
        ),
    ),
    Migration(
        2, "contracts and member freezes", "\n".join((trading.SCHEMA, members.FREEZES_SCHEMA))
    ),
    Migration(3, "deliveries", delivery.SCHEMA),
    Migration(4, "catalog releases kept by the node", trading.CATALOG_SCHEMA),
)
