"""schemathesis hooks for tests/openapi.rs: WHIP and WHEP take `application/sdp` (text)."""

import schemathesis


@schemathesis.serializer("application/sdp")
def sdp(ctx, value):
    if value is None:
        return b""
    if isinstance(value, bytes):
        return value
    return str(value).encode("utf-8", "surrogatepass")
