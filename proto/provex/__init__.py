"""The Provex protocol runtime: what every party computes and verifies the same way.

Modules: ``ids`` (dataset ids, credit codes, region codes, node ids),
``envelope`` (DSSE signing), ``merkle`` (RFC 6962 trees and proofs),
``checkpoint`` (C2SP signed notes), ``trust`` (the trust root), ``grading``
(catalog and grade derivation), ``identity`` (SPIFFE ids and TLS credentials),
``pki`` (keys, CSRs and certificates of the federation CA), ``bundle``
(offline verification of certificate bundles), ``errors`` (the one error
hierarchy). The wire contract's generated code lives in ``provex.v1``.
"""

__version__ = "0.1.0"
