"""Ask a lanyard agent for one specific SPIFFE ID's JWT-SVID with the PyPI
`spiffe` package. Prints `ok <spiffe id>` or `refused <error>`; exit 0 either way,
non-zero only if the script itself breaks."""
import sys

from spiffe import SpiffeId, WorkloadApiClient

socket_path, wanted = sys.argv[1], sys.argv[2]
with WorkloadApiClient(socket_path="unix://" + socket_path) as client:
    try:
        svid = client.fetch_jwt_svid(audience={"security"}, subject=SpiffeId(wanted))
        print("ok", svid.spiffe_id)
    except Exception as e:  # the package wraps the gRPC status in its own errors
        print("refused", repr(e), getattr(e, "__cause__", None))
