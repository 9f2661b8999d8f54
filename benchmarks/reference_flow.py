"""The reference code's way of scoring, re-enacted for comparison (not clipdet's code path):
per model, build the whole CLIP with random initialisation, load the full checkpoint, then for
every image decode it, transform it and run the model at batch size 1.

    python benchmarks/reference_flow.py CHECKPOINT WEIGHTS_DIR MODELS IMAGE...
Prints one JSON line: start-up seconds, total seconds, peak RSS, LLRs.
"""

import sys
import time

import open_clip
import torch
from common import print_run
from PIL import Image
from torchvision import transforms as T


def main() -> None:
    t0 = time.perf_counter()
    checkpoint, weights_dir, models, *images = sys.argv[1:]
    transform = T.Compose(
        [
            T.Resize(224, interpolation=T.InterpolationMode.BICUBIC),
            T.CenterCrop((224, 224)),
            T.ToTensor(),
            T.Normalize((0.48145466, 0.4578275, 0.40821073), (0.26862954, 0.26130258, 0.27577711)),
        ]
    )
    nets = []
    for name in models.split(","):
        clip = open_clip.create_model("ViT-L-14", pretrained=checkpoint).eval()
        clip.visual.proj = None
        head = torch.load(f"{weights_dir}/{name}/weights.pth", weights_only=True)["model"]
        nets.append((clip, head))
    startup = time.perf_counter() - t0
    llrs = []
    with torch.no_grad():
        for path in images:
            x = transform(Image.open(path).convert("RGB"))[None]
            row = []
            for clip, head in nets:
                f = clip.encode_image(x, normalize=True)
                row.append(float(f @ head["fc.weight"].T + head["fc.bias"]))
            llrs.append(row)
    print_run(t0, startup, llrs)


if __name__ == "__main__":
    main()
