"""`python -m schema_registry --data-dir DIR [--host H] [--port P]`: serve the registry;
over HTTPS with `--ssl-keyfile K --ssl-certfile C`."""

from __future__ import annotations

import argparse
from pathlib import Path

import uvicorn

from schema_registry.app import create_app
from schema_registry.store import SchemaStore


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m schema_registry", description=__doc__)
    parser.add_argument("--data-dir", type=Path, required=True, help="where schemas are kept")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8081)
    parser.add_argument("--ssl-keyfile", help="private key: serve HTTPS (with --ssl-certfile)")
    parser.add_argument("--ssl-certfile", help="certificate chain for --ssl-keyfile")
    args = parser.parse_args(argv)
    if (args.ssl_keyfile is None) != (args.ssl_certfile is None):
        parser.error("--ssl-keyfile and --ssl-certfile go together")
    store = SchemaStore.open(args.data_dir / "schemas.json")
    uvicorn.run(
        create_app(store),
        host=args.host,
        port=args.port,
        access_log=False,
        ssl_keyfile=args.ssl_keyfile,
        ssl_certfile=args.ssl_certfile,
    )


if __name__ == "__main__":
    main()
