"""Fetch a JWT-SVID and an X.509-SVID from a lanyard agent with the PyPI `spiffe`
package (grpc C-core underneath). Prints one JSON line; exits non-zero on error."""
import json
import sys

from spiffe import WorkloadApiClient

socket_path = sys.argv[1]
with WorkloadApiClient(socket_path="unix://" + socket_path) as client:
    jwt = client.fetch_jwt_svid(audience={"billing"})
    x509 = client.fetch_x509_svid()
    bundles = client.fetch_x509_bundles()
    print(json.dumps({
        "jwt_spiffe_id": str(jwt.spiffe_id),
        "jwt_audience": sorted(jwt.audience),
        "x509_spiffe_id": str(x509.spiffe_id),
        "x509_chain_len": len(x509.cert_chain),
        "x509_bundle_roots": sum(len(b.x509_authorities) for b in bundles.bundles),
    }))
