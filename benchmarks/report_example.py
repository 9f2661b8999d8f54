"""The README's report screenshot: the bundled demo images scored by random-weight models (a
head on a random ViT-L/14 and a random full-resolution ResNet-50, with evidence maps), the
report written by main.py --report and photographed in headless Chromium. The scores say
nothing about the images: the weights are random.

    python benchmarks/report_example.py [--work /tmp/clipdet-bench] [--png docs/report_demo.png]
"""

import subprocess
import sys
from pathlib import Path

import torch
from common import REPO, _write_model, bench_parser, make_head, make_vit_l14_checkpoint


def main() -> None:
    parser = bench_parser(__doc__)
    parser.add_argument("--png", type=Path, default=REPO / "docs" / "report_demo.png")
    args = parser.parse_args()
    checkpoint = make_vit_l14_checkpoint(args.work / "vit_l14_random.bin")
    weights = args.work / "report_weights"
    make_head(weights, "clip_random", 3)
    from torchvision.models import resnet50

    torch.manual_seed(0)
    state = resnet50(num_classes=1).state_dict()
    _write_model(weights, "resnet_random", state, arch="res50nodown", norm_type="resnet",
                 patch_size=None)  # fmt: skip
    report = args.work / "report" / "report.html"
    subprocess.run(
        [sys.executable, str(REPO / "main.py"), "-i", str(REPO / "data/demo/demo.csv"),
         "-o", str(args.work / "report" / "scores.csv"), "-w", str(weights),
         "-m", "clip_random,resnet_random", "--backbone_weights", str(checkpoint), "-d", "cpu",
         "--maps", str(args.work / "report" / "maps"), "--report", str(report), "-q"],
        check=True, cwd=REPO,
    )  # fmt: skip
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path="/usr/bin/chromium",
                                    args=["--no-sandbox", "--disable-gpu"])  # fmt: skip
        page = browser.new_page(viewport={"width": 1200, "height": 1000})
        page.goto(report.as_uri())
        page.wait_for_selector(".card")
        page.select_option("#sort", "fusion")
        args.png.parent.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(args.png), full_page=True)
        browser.close()
    print(f"report: {report}\nscreenshot: {args.png}")


if __name__ == "__main__":
    main()
