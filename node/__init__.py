"""The provincial exchange node: members, listings, search, trades and delivery."""
