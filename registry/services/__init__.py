"""The registry's gRPC servicers: thin (decode, authorize, call the logic, encode).

One module per area; domain logic lives in the modules beside this package
(``registry.catalog``, ``registry.enrollment``, ``registry.issuance``, ...).
Errors are ProvexErrors; ``provex.rpc.ErrorInterceptor`` maps them to status
codes in one place.
"""
