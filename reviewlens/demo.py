"""`reviewlens demo`: the pipeline end to end on the demo shop, on this machine, with real servers.

Generates the shop, serves it, starts Label Studio, runs the pipeline flow with the scripted
annotator, and says where to look.
"""

from __future__ import annotations

import os
from dataclasses import replace
from pathlib import Path

from curation.contact_sheet import write_contact_sheet
from reviewlens.demoshop.generate import GeneratorConfig, generate
from reviewlens.demoshop.server import DemoShop
from reviewlens.labelstudio_server import LabelStudioServer
from reviewlens.settings import Layout, TrainConfig

# Fixed ports keep photo URLs, and so the manifest's provenance, the same from run to run.
SHOP_PORT, IMAGE_PORT = 8700, 8701


def run_demo(data_dir: Path, port: int = 8080, quick: bool = False) -> dict[str, object]:
    """Runs the demo; returns the pipeline's result."""
    from flows.pipeline import pipeline_flow

    data_dir = Path(data_dir).resolve()
    layout = Layout(data_dir)
    shop_config = GeneratorConfig()
    train_config = TrainConfig()
    if quick:
        shop_config = replace(shop_config, n_categories=2, products_per_category=3, photos_per_product=30)
        train_config = replace(
            train_config, members=("efficientnet_lite0", "efficientnet_lite1"), epochs=2, image_size=128
        )
    print(f"1/3 generating the demo shop in {data_dir / 'demo-shop'}", flush=True)
    shop_dir = generate(shop_config, data_dir / "demo-shop")
    server = LabelStudioServer(data_dir / "label-studio", data_dir, port=port)
    print(f"2/3 starting Label Studio at {server.url} (the first start takes a minute)", flush=True)
    creds = server.start()
    os.environ.update(
        {
            "LABEL_STUDIO_URL": server.url,
            "LABEL_STUDIO_API_KEY": creds.token,
            "LOCAL_FILES_DOCUMENT_ROOT": str(data_dir),
        }
    )
    with DemoShop(shop_dir, port=SHOP_PORT, image_port=IMAGE_PORT) as shop:
        print(f"3/3 running the pipeline against the demo shop at {shop.url}", flush=True)
        crawl = {
            **shop.crawl_settings(),
            # The demo shop runs on this machine: it can take more than a real shop's default.
            "api_rate": 20.0,
            "image_rate": 50.0,
        }
        train = {k: list(v) if isinstance(v, tuple) else v for k, v in train_config.__dict__.items() if k != "weights"}
        result = pipeline_flow(data_dir=str(data_dir), crawl=crawl, train=train, demo_shop_dir=str(shop_dir))
    evaluated = result["evaluate"]
    run_dir = Path(evaluated["run_dir"])
    print()
    print(evaluated["markdown"])
    print(f"Report:        {run_dir / 'report.md'} (and report.json)")
    print(f"Model:         {run_dir / 'model.pt'}; promoted: {evaluated['promoted']} ({evaluated['gate']['reason']})")
    print(f"Manifest:      {layout.manifest_path}")
    print(f"Contact sheet: {write_contact_sheet(layout)} (duplicate groups and the machine's rule verdicts)")
    print(f"Label Studio:  {result['push']['project_url']}")
    print(
        f"  login {creds.username} / {creds.password} "
        f"(kept in {server.home / 'credentials.json'}; `make stop` stops it)"
    )
    sample = next(iter(sorted((shop_dir / "photos").glob("*.jpg"))))
    print(f"Try:           .venv/bin/reviewlens predict {sample} --data-dir {data_dir}")
    return result
