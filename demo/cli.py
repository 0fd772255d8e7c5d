"""The `reviewlens-demo` command: the pipeline end to end on the demo shop (`run`), the demo shop
alone (`shop`), and `stop` for what `run` left serving."""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

from core.layout import DEFAULT_DATA_DIR, Layout
from reviewlens.cli import add_data_dir, command_parser, run
from reviewlens.labelstudio_server import LabelStudioServer, port_of


def cmd_shop(args: argparse.Namespace) -> None:
    from demo.shop.faults import FaultPlan
    from demo.shop.generate import GeneratorConfig, generate
    from demo.shop.server import DemoShop

    faults = None
    if args.faults or args.latency_ms:
        faults = FaultPlan.parse(
            args.faults or "",
            args.fault_rate,
            seed=args.seed,
            latency_s=args.latency_ms / 1000,
            stall_s=args.stall_s,
            oversize_bytes=args.oversize_bytes,
        )

    out = generate(
        GeneratorConfig(
            seed=args.seed,
            n_categories=args.categories,
            products_per_category=args.products,
            photos_per_product=args.photos,
            catalog_photos=args.catalog_photos,
        ),
        args.out,
    )
    with DemoShop(out, args.host, args.port, args.image_port, args.request_log, faults) as shop:
        print(f"demo shop: pages and JSON at {shop.url}, photos at {shop.image_url} (Ctrl-C stops)", flush=True)
        if faults:
            print(f"faults: {faults.rates}, latency {faults.latency_s * 1000:.0f} ms", flush=True)
        try:
            while True:
                time.sleep(3600)
        except KeyboardInterrupt:
            pass


def cmd_stop(args: argparse.Namespace) -> None:
    from demo.flow import stop_shop

    layout = Layout(args.data_dir)
    home = layout.data_dir / "label-studio"
    server = LabelStudioServer(home, layout.data_dir, port=port_of(home))
    stopped = [f"Label Studio at {server.url}"] if server.stop() else []
    stopped += ["the demo shop"] if stop_shop(layout.data_dir / "demo-shop") else []
    print(f"stopped: {', '.join(stopped)}" if stopped else f"nothing of the demo in {layout.data_dir} was running")


def cmd_run(args: argparse.Namespace) -> None:
    from demo.flow import run_demo

    run_demo(Path(args.data_dir), port=args.port, quick=args.quick)


def build_parser() -> argparse.ArgumentParser:
    parser, sub = command_parser("reviewlens-demo", __doc__)

    p = sub.add_parser("run", help="set up and run the pipeline on the demo shop")
    add_data_dir(p)
    p.add_argument("--port", type=int, default=8080, help="Label Studio's port")
    p.add_argument("--quick", action="store_true", help="a smaller shop and shorter training")
    p.set_defaults(func=cmd_run)

    p = sub.add_parser("stop", help="stop what `run` left serving: its Label Studio and the demo shop")
    add_data_dir(p)
    p.set_defaults(func=cmd_stop)

    p = sub.add_parser("shop", help="serve the generated demo shop, faults on request")
    p.add_argument(
        "--out", type=Path, default=DEFAULT_DATA_DIR / "demo-shop", help="where the catalog and photos are generated"
    )
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8700)
    p.add_argument("--image-port", type=int, default=8701)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--categories", type=int, default=4)
    p.add_argument("--products", type=int, default=5, help="products per category")
    p.add_argument("--photos", type=int, default=36, help="review photos per product")
    p.add_argument("--catalog-photos", action="store_true", help="product pages name the shop's own photo of each")
    p.add_argument("--request-log", type=Path, help="append every request received to this JSONL file")
    p.add_argument(
        "--faults",
        help="'default' (every fault, --fault-rate in all) or NAME=RATE,...: "
        "5xx, 429, slow, stall, truncate, content_type, drift, redirect, oversize, bomb",
    )
    p.add_argument("--fault-rate", type=float, default=0.1, help="share of requests faulted with --faults default")
    p.add_argument("--latency-ms", type=float, default=0.0, help="added to every response")
    p.add_argument("--stall-s", type=float, default=10.0, help="how long a stalled response hangs")
    p.add_argument("--oversize-bytes", type=int, default=25_000_000, help="size of an oversized photo")
    p.set_defaults(func=cmd_shop)
    return parser


def main(argv: list[str] | None = None) -> int:
    return run(build_parser().parse_args(argv))


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    sys.exit(main())
