"""The national registry: enrollment, catalog, signed dataset identifiers, transparency log."""
