"""Tiny random-weight versions of the peers' models (clip-cues, RINE, Community Forensics) and
the images their LLRs are checked on, built the same way on every machine: every tensor is
drawn from a seeded ``torch.Generator`` in the order of its sorted key, so that
``benchmarks/peer_parity.py`` (which runs the peers' own code once, offline) and the tests
(which run clipdet) read the same weights. ``tests/fixtures/peer_llrs.json`` holds what the
peers' code gave."""

import json
from pathlib import Path

import numpy as np
import open_clip
import torch
from PIL import Image

FIXTURE = Path(__file__).resolve().parent / "fixtures" / "peer_llrs.json"

# A tiny OpenAI-style CLIP (QuickGELU, 64-d heads as OpenAI's code derives them), at 224 px
# (RINE's tower) and at 336 px (clip-cues'): open_clip model configs registered by name.
TINY_OPENAI = {224: "clipdet-test-tiny-openai", 336: "clipdet-test-tiny-openai-336"}
TINY_OPENAI_BACKBONE = {224: "tinyopenai", 336: "tinyopenai336"}
OPENAI_WIDTH, OPENAI_LAYERS, OPENAI_EMBED, OPENAI_PATCH = 128, 3, 32, 32


def tiny_openai_config(size: int) -> dict:
    return {
        "embed_dim": OPENAI_EMBED,
        "quick_gelu": True,
        "vision_cfg": {"image_size": size, "layers": OPENAI_LAYERS, "width": OPENAI_WIDTH,
                       "patch_size": OPENAI_PATCH, "head_width": 64},
        "text_cfg": {"context_length": 16, "vocab_size": 100, "width": 64, "heads": 1,
                     "layers": 1},
    }  # fmt: skip


def seeded_state(shapes: dict, seed: int, scale: float = 0.1) -> dict:
    """A random state of the given key -> shape: norms' weights near 1, biases small, the rest
    N(0, scale^2); drawn in sorted-key order from one seeded generator."""
    g = torch.Generator().manual_seed(seed)
    state = {}
    for key in sorted(shapes):
        shape = tuple(shapes[key])
        noise = torch.randn(shape, generator=g, dtype=torch.float32)
        if key.endswith("logit_scale"):
            state[key] = torch.tensor(4.6052)
        elif ("ln" in key or "norm" in key) and key.endswith("weight"):
            state[key] = 1 + 0.1 * noise
        elif key.endswith("bias"):
            state[key] = 0.02 * noise
        else:
            state[key] = scale * noise
    return state


def register_tiny_openai(folder: Path) -> dict[int, Path]:
    """Register both tiny OpenAI-style towers with open_clip and clipdet (each backbone names
    its own weights file) and write their full checkpoints (open_clip's keys are OpenAI's).
    Returns size -> checkpoint path."""
    from clipdet.models.registry import register_backbone

    paths = {}
    for size, name in TINY_OPENAI.items():
        config = folder / f"{name}.json"
        config.write_text(json.dumps(tiny_openai_config(size)))
        open_clip.add_model_config(config)
        with torch.device("meta"):
            shapes = {k: v.shape for k, v in open_clip.create_model(name, device="meta")
                      .state_dict().items()}  # fmt: skip
        # fp16 values, as OpenAI's released weights are (its clip.load rounds them to fp16)
        state = {k: v.half().float() for k, v in seeded_state(shapes, seed=size).items()}
        paths[size] = folder / f"{name}.pt"
        torch.save(state, paths[size])
        register_backbone(TINY_OPENAI_BACKBONE[size], name, file=str(paths[size]))
    return paths


def rine_head_state(seed: int = 11, proj_dim: int = 16, nproj: int = 2) -> dict:
    """RINE's trainable part, in its checkpoint's keys."""
    shapes = {"alpha": (1, OPENAI_LAYERS, proj_dim)}
    for i in range(nproj):
        shapes[f"proj1.{3 * i + 1}.weight"] = (proj_dim, OPENAI_WIDTH if i == 0 else proj_dim)
        shapes[f"proj2.{3 * i + 1}.weight"] = (proj_dim, proj_dim)
        shapes[f"proj1.{3 * i + 1}.bias"] = shapes[f"proj2.{3 * i + 1}.bias"] = (proj_dim,)
    for index, (rows, cols) in {0: (proj_dim, proj_dim), 3: (proj_dim, proj_dim),
                                6: (1, proj_dim)}.items():  # fmt: skip
        shapes[f"head.{index}.weight"], shapes[f"head.{index}.bias"] = (rows, cols), (rows,)
    state = seeded_state(shapes, seed, scale=0.5)
    state["alpha"] = state["alpha"] * 4  # blocks weighted unevenly
    return state


def linear_probe_state(seed: int = 12) -> dict:
    """A clip-cues linear probe checkpoint's state (1 x width)."""
    state = seeded_state({"fc.weight": (1, OPENAI_WIDTH), "fc.bias": (1,)}, seed, scale=1.0)
    return {f"model.classification_head.{k}": v for k, v in state.items()}


CONCEPT_NAMES = [f"concept_{chr(97 + i)}" for i in range(12)]


def concept_state(seed: int = 13) -> dict:
    """A clip-cues concept bottleneck's state: unit-norm text embeddings as its model stores
    them, gates and a classifier over len(CONCEPT_NAMES) concepts."""
    n = len(CONCEPT_NAMES)
    state = seeded_state({"text_embeddings": (n, OPENAI_EMBED), "W_concepts.weight":
                          (n, OPENAI_EMBED), "W_concepts.bias": (n,), "W_classifier.weight":
                          (1, n), "W_classifier.bias": (1,)}, seed, scale=2.0)  # fmt: skip
    state["text_embeddings"] = torch.nn.functional.normalize(state["text_embeddings"], dim=1)
    state["W_classifier.weight"] = state["W_classifier.weight"] * 3
    return {f"model.{k}": v for k, v in state.items()}


def write_concepts_csv(path: Path) -> None:
    rows = ["attribute_name,positive,negative"]
    rows += [f"{name},more {name},less {name}" for name in CONCEPT_NAMES]
    path.write_text("\n".join(rows) + "\n")


COMMFOR_TIMM = "vit_small_patch16_384"
COMMFOR_KWARGS = {"depth": 2}  # ViT-S/16 at 384 px, two blocks


def commfor_state(seed: int = 14) -> dict:
    """A Community Forensics checkpoint (its module's keys: ``vit.*``) of a two-block
    ViT-S/16 at 384 px with one output."""
    import timm

    with torch.device("meta"):
        vit = timm.create_model(COMMFOR_TIMM, pretrained=False, num_classes=1, **COMMFOR_KWARGS)
    shapes = {f"vit.{k}": v.shape for k, v in vit.state_dict().items()}
    state = seeded_state(shapes, seed, scale=0.05)
    state["vit.head.weight"] = state["vit.head.weight"] * 5
    return state


# The images: smaller than every input, non-square with odd crop offsets, square, and 12 MP.
IMAGE_SIZES = {"small.png": (150, 100), "odd.png": (517, 403), "wide.png": (999, 337),
               "square.png": (384, 384), "twelve_mp.png": (4000, 3000)}  # fmt: skip


def peer_image(name: str) -> Image.Image:
    """A smooth pattern plus seeded noise (PNG keeps it exact and small enough at 12 MP)."""
    width, height = IMAGE_SIZES[name]
    rng = np.random.default_rng(sorted(IMAGE_SIZES).index(name))
    x = np.arange(width, dtype=np.float32)
    y = np.arange(height, dtype=np.float32)[:, None]
    phases = rng.uniform(0, 6.28, size=3).astype(np.float32)
    noise = rng.normal(0, 12, size=(3, height // 8 + 1, width // 8 + 1)).astype(np.float32)
    planes = []
    for c, phase in enumerate(phases):
        u, v = x / (37 + 11 * c) + phase, y / (53 - 7 * c)  # sin(u + v), separably
        plane = 127 + 90 * (np.sin(u) * np.cos(v) + np.cos(u) * np.sin(v))
        plane += noise[c].repeat(8, axis=0).repeat(8, axis=1)[:height, :width]
        planes.append(np.clip(plane, 0, 255).astype(np.uint8))
    return Image.merge("RGB", [Image.fromarray(plane) for plane in planes])


def write_peer_images(folder: Path) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for name in IMAGE_SIZES:
        path = folder / name
        if not path.is_file():
            peer_image(name).save(path, compress_level=1)
        paths.append(path)
    return paths
