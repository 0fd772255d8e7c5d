"""The Prefect server `reviewlens up` runs: Prefect's own app, as `prefect server start` serves it,
behind a Host check (core/doors.py). Prefect has no setting for the names it answers to, so
a page that points its own domain at this machine (DNS rebinding) would otherwise reach it.

Run as `python -m reviewlens.prefect_server --host H --port P`, with the environment
`Services.env()` gives (its login, its CORS origin, its home).
"""

from __future__ import annotations

import argparse
import os

import uvicorn
from starlette.middleware.trustedhost import TrustedHostMiddleware

from core.doors import HeadersInTime, own_hosts


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=4200)
    args = parser.parse_args()
    # Read by Prefect's settings, as `prefect server start --host --port` sets them: the UI and
    # the welcome text name this address.
    os.environ["PREFECT_SERVER_API_HOST"], os.environ["PREFECT_SERVER_API_PORT"] = args.host, str(args.port)
    from prefect.server.api.server import create_app
    from prefect.settings import PREFECT_SERVER_API_KEEPALIVE_TIMEOUT

    app = TrustedHostMiddleware(create_app(final=True), allowed_hosts=own_hosts(args.host), www_redirect=False)
    print(f"Prefect server on http://{args.host}:{args.port}/ (answers {', '.join(own_hosts(args.host))})", flush=True)
    uvicorn.run(app, host=args.host, port=args.port, http=HeadersInTime, log_level="warning",
                timeout_keep_alive=PREFECT_SERVER_API_KEEPALIVE_TIMEOUT.value())  # fmt: skip


if __name__ == "__main__":
    main()
