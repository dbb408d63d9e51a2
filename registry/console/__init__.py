"""The registry's supervision console: a read-only web page for admins, auditors, supervisors.

:mod:`registry.console.server` serves it over HTTPS with mutual TLS (client
certificates from the federation CA, the same admin identities as the
federation port) on the ``console_listen`` setting, in the registry's own
event loop; :mod:`registry.console.views` reads what it shows through the
registry's books (the node directory and its health, the latest checkpoint
and its witnesses, the catalog tree, trade and export statistics, frozen
members, overdue risk assessments), narrowed to a supervisor's province.

Nothing is imported here: aiohttp (about 0.3 s to import) loads only when
``provex-registry serve`` starts the console, not for every CLI command.
"""
