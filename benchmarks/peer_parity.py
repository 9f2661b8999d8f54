"""Run the peers' own code once, offline, on tiny random weights, and record what it gives.

The peers are clip-cues (``marco-willi/clip-cues``: its linear probes and its concept
bottleneck), RINE (``mever-team/rine``) and Community Forensics
(``JeongsooP/Community-Forensics``). Give each a checkout of its repository::

    python benchmarks/peer_parity.py --clipcues_code PATH --rine_code PATH --commfor_code PATH

Needs ``transformers`` (clip-cues' CLIP is Hugging Face's) and ``openai-clip`` (RINE reads
OpenAI's ``clip`` package); neither is a clipdet requirement. The weights and images are
``tests/peer_models.py``'s (seeded, the same on every machine). The hub is never reached:
``from_pretrained`` calls are answered with the tiny models, and timm's ``pretrained=True``
with random weights that the tiny state then overwrites. The peers' modules that only their
training imports (wandb, datasets, cv2 ...) are stubbed.

The LLRs (each peer's logit, > 0 synthetic) go to ``tests/fixtures/peer_llrs.json`` (``--out``),
with the concept model's per-concept contributions; then clipdet scores the same images with
the same weights and the largest difference per model is printed. ``--check`` only compares
clipdet with an existing file.
"""

import argparse
import json
import sys
import tempfile
import types
from pathlib import Path

import numpy as np
import torch
from PIL import Image

REPO = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(REPO), str(REPO / "tests")]

import peer_models as P  # noqa: E402

OPENAI_MEAN = [0.48145466, 0.4578275, 0.40821073]
OPENAI_STD = [0.26862954, 0.26130258, 0.27577711]


def _stub(name: str, **attributes) -> None:
    """An empty module for an import the code paths run here never use."""
    if name in sys.modules:
        return
    try:
        __import__(name)
    except ImportError:
        module = types.ModuleType(name)
        module.__dict__.update(attributes, __path__=[])
        module.__getattr__ = lambda attribute: type(attribute, (), {})  # any name: a class
        sys.modules[name] = module


def _openclip_state(path: Path) -> dict:
    return torch.load(path, map_location="cpu", weights_only=True)


def hf_vision_state(state: dict, projection: bool) -> dict:
    """An open_clip (OpenAI-layout) CLIP state -> Hugging Face ``CLIPVisionModel`` keys."""
    out = {
        "vision_model.embeddings.class_embedding": state["visual.class_embedding"],
        "vision_model.embeddings.patch_embedding.weight": state["visual.conv1.weight"],
        "vision_model.embeddings.position_embedding.weight": state["visual.positional_embedding"],
        "vision_model.pre_layrnorm.weight": state["visual.ln_pre.weight"],
        "vision_model.pre_layrnorm.bias": state["visual.ln_pre.bias"],
        "vision_model.post_layernorm.weight": state["visual.ln_post.weight"],
        "vision_model.post_layernorm.bias": state["visual.ln_post.bias"],
    }
    for i in range(P.OPENAI_LAYERS):
        src, dst = f"visual.transformer.resblocks.{i}.", f"vision_model.encoder.layers.{i}."
        for part, tensor in zip("qkv", state[src + "attn.in_proj_weight"].chunk(3), strict=True):
            out[f"{dst}self_attn.{part}_proj.weight"] = tensor
        for part, tensor in zip("qkv", state[src + "attn.in_proj_bias"].chunk(3), strict=True):
            out[f"{dst}self_attn.{part}_proj.bias"] = tensor
        pairs = {
            "attn.out_proj": "self_attn.out_proj",
            "ln_1": "layer_norm1",
            "ln_2": "layer_norm2",
            "mlp.c_fc": "mlp.fc1",
            "mlp.c_proj": "mlp.fc2",
        }
        for a, b in pairs.items():
            out[f"{dst}{b}.weight"] = state[f"{src}{a}.weight"]
            out[f"{dst}{b}.bias"] = state[f"{src}{a}.bias"]
    if projection:
        out["visual_projection.weight"] = state["visual.proj"].T.contiguous()
    return out


def hf_vision_model(checkpoint: Path, projection: bool):
    from transformers import CLIPVisionConfig, CLIPVisionModel, CLIPVisionModelWithProjection

    config = CLIPVisionConfig(
        hidden_size=P.OPENAI_WIDTH, intermediate_size=4 * P.OPENAI_WIDTH,
        num_hidden_layers=P.OPENAI_LAYERS, num_attention_heads=P.OPENAI_WIDTH // 64,
        image_size=336, patch_size=P.OPENAI_PATCH, projection_dim=P.OPENAI_EMBED,
        hidden_act="quick_gelu", layer_norm_eps=1e-5,
    )  # fmt: skip
    cls = CLIPVisionModelWithProjection if projection else CLIPVisionModel
    model = cls(config)
    state = hf_vision_state(_openclip_state(checkpoint), projection)
    if not any(key.startswith("vision_model.") for key in model.state_dict()):
        state = {k.removeprefix("vision_model."): v for k, v in state.items()}  # its layout
    missing, unexpected = model.load_state_dict(state, strict=False)
    if [k for k in missing if "position_ids" not in k] or unexpected:
        raise RuntimeError(f"HF conversion: missing {missing}, unexpected {unexpected}")
    return model.eval()


def clip_image_processor():
    """openai/clip-vit-large-patch14-336's preprocessor config, as ``from_pretrained`` reads it
    (transformers' default backend)."""
    from transformers import CLIPImageProcessor

    return CLIPImageProcessor(
        size={"shortest_edge": 336}, crop_size={"height": 336, "width": 336}, resample=3,
        do_center_crop=True, do_normalize=True, do_resize=True, do_rescale=True,
        image_mean=OPENAI_MEAN, image_std=OPENAI_STD,
    )  # fmt: skip


def run_clipcues(code: Path, checkpoint: Path, images: list[Path]) -> dict:
    from transformers import CLIPImageProcessor, CLIPVisionModel

    for name in ("seaborn", "torchmetrics", "torchmetrics.classification"):
        _stub(name)
    sys.path.insert(0, str(code / "src"))
    # the hub answered with the tiny models
    CLIPVisionModel.from_pretrained = classmethod(
        lambda cls, *a, **k: hf_vision_model(checkpoint, projection=False)
    )
    CLIPImageProcessor.from_pretrained = classmethod(lambda cls, *a, **k: clip_image_processor())
    from clip_cues.classification_head import LinearHead
    from clip_cues.concept_modeling.networks import ConceptBottleneckModel
    from clip_cues.feature_extractor import CLIPLargePatch14
    from clip_cues.model import SyntheticImageClassifierInference
    from clip_cues.transforms import Transforms

    extractor = CLIPLargePatch14(cache_dir=tempfile.gettempdir())
    extractor.freeze()
    head = LinearHead(input_dim=P.OPENAI_WIDTH, num_classes=1)
    state = P.linear_probe_state()
    head.load_state_dict({k.replace("model.classification_head.", ""): v
                          for k, v in state.items()})  # fmt: skip
    model = SyntheticImageClassifierInference(extractor.model, head).eval()
    inference = Transforms(extractor.transforms).get_inference_transforms()
    linear = {}
    for path in images:
        batch = inference({"image": [Image.open(path).convert("RGB")]})
        with torch.no_grad():
            features = model.feature_extractor(torch.stack(batch["pixel_values"]))
            linear[path.name] = float(model.classification_head(
                features["extracted_features"])["logits"][0, 0])  # fmt: skip

    # the concept model: its embedding script's features (the projected image embeds of the
    # model's AutoProcessor's pixels), then its ConceptBottleneckModel
    vision = hf_vision_model(checkpoint, projection=True)
    processor = clip_image_processor()
    concept_state = P.concept_state()
    cbm = ConceptBottleneckModel(text_embeddings=concept_state["model.text_embeddings"])
    cbm.load_state_dict({k.replace("model.", ""): v for k, v in concept_state.items()})
    cbm.eval()
    concepts, contributions = {}, {}
    for path in images:
        inputs = processor(images=Image.open(path).convert("RGB"), return_tensors="pt")
        with torch.inference_mode():
            out = cbm(vision(**inputs).image_embeds)
        concepts[path.name] = float(out["class_logits"][0, 0])
        contributions[path.name] = [float(v) for v in out["per_concept_logit_contribution"][0]]
    return {"clipcues_linear": linear, "clipcues_concepts": concepts,
            "clipcues_concepts_contributions": contributions}  # fmt: skip


def run_rine(code: Path, checkpoint: Path, images: list[Path]) -> dict:
    if "pkg_resources" not in sys.modules:  # OpenAI's clip reads packaging through it
        import packaging.version

        sys.modules["pkg_resources"] = types.SimpleNamespace(packaging=packaging)
    _stub("cv2")
    import scipy.ndimage

    _stub("scipy.ndimage.filters", gaussian_filter=scipy.ndimage.gaussian_filter)
    sys.path.insert(0, str(code))
    for name, attributes in {
        "src.data": ("TrainingDataset", "TrainingDatasetLDM", "EvaluationDataset"),
        "src.ablations": ("ModelAblations",),
    }.items():  # only its training reads them
        sys.modules[name] = types.SimpleNamespace(**{a: None for a in attributes})
    from src.models import Model
    from src.utils import get_transforms

    head = P.rine_head_state()
    # clip.load tries TorchScript first and falls back to a state dict on RuntimeError; a
    # failed torch.jit.load leaves the file read to its end, so answer it without reading
    jit_load = torch.jit.load
    torch.jit.load = lambda *a, **k: (_ for _ in ()).throw(RuntimeError("a state dict"))
    try:
        model = Model(backbone=(str(checkpoint), P.OPENAI_WIDTH), nproj=2,
                      proj_dim=head["alpha"].shape[2], device="cpu")  # fmt: skip
    finally:
        torch.jit.load = jit_load
    for name, value in head.items():  # as its get_our_trained_model assigns them
        module_path, _, attribute = name.rpartition(".")
        owner = model.get_submodule(module_path) if module_path else model
        setattr(owner, attribute, torch.nn.Parameter(value))
    model.eval()
    _, transforms, _ = get_transforms()
    llrs = {}
    for path in images:
        with torch.no_grad():
            logit = model(transforms(Image.open(path).convert("RGB")).unsqueeze(0))[0]
        llrs[path.name] = float(logit[0, 0])
    return {"rine": llrs}


def run_commfor(code: Path, images: list[Path]) -> dict:
    import argparse as ap

    import timm

    for name in ("wandb", "datasets", "cv2", "torchmetrics", "torchmetrics.classification"):
        _stub(name)
    sys.path.insert(0, str(code))
    create = timm.create_model

    def offline(name, pretrained=False, **kwargs):  # its ViT-S/16, random, made tiny
        return create(name, pretrained=False, **{**kwargs, **P.COMMFOR_KWARGS})

    timm.create_model = offline
    import dataloader
    import models

    model = models.ViTClassifier(model_size="small", input_size=384, patch_size=16,
                                 device="cpu")  # fmt: skip
    model.load_state_dict(P.commfor_state())
    model.eval()
    timm.create_model = create
    transform = dataloader.get_transform(ap.Namespace(input_size=384), mode="test")
    llrs = {}
    for path in images:
        with torch.no_grad():
            llrs[path.name] = float(model(transform(Image.open(path).convert("RGB"))[None])[0, 0])
    return {"commfor": llrs}


def clipdet_llrs(folder: Path, images: list[Path]) -> tuple[dict, dict]:
    """clipdet's LLRs of the same models (tests/test_peer_models.py builds them alike), and
    the concept model's contributions."""
    from test_peer_models import score_peers

    return score_peers(folder, images)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clipcues_code", type=Path)
    parser.add_argument("--rine_code", type=Path)
    parser.add_argument("--commfor_code", type=Path)
    parser.add_argument("--out", type=Path, default=P.FIXTURE)
    parser.add_argument("--check", action="store_true", help="only compare clipdet with --out")
    args = parser.parse_args(argv)
    folder = Path(tempfile.mkdtemp(prefix="peer-parity-"))
    images = P.write_peer_images(folder / "images")
    checkpoints = P.register_tiny_openai(folder)
    if args.check:
        expected = json.loads(args.out.read_text())
    else:
        expected = {}
        if args.clipcues_code:
            expected.update(run_clipcues(args.clipcues_code, checkpoints[336], images))
        if args.rine_code:
            expected.update(run_rine(args.rine_code, checkpoints[224], images))
        if args.commfor_code:
            expected.update(run_commfor(args.commfor_code, images))
        import timm
        import transformers

        expected["versions"] = {"torch": torch.__version__, "timm": timm.__version__,
                                "transformers": transformers.__version__}  # fmt: skip
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(expected, indent=1, sort_keys=True) + "\n")
        print(f"wrote {args.out}")
    ours, contributions = clipdet_llrs(folder, images)
    for model, values in ours.items():
        if model not in expected:
            continue
        diffs = [abs(values[name] - expected[model][name]) for name in values]
        spread = np.ptp(list(expected[model].values()))
        print(f"{model:20s} largest |clipdet - peer| {max(diffs):.2e} over {len(diffs)} images "
              f"(the peer's LLRs spread over {spread:.2f})")  # fmt: skip
    if "clipcues_concepts_contributions" in expected:
        peer = expected["clipcues_concepts_contributions"]
        diff = max(float(np.abs(np.asarray(contributions[n]) - np.asarray(peer[n])).max())
                   for n in contributions)  # fmt: skip
        print(f"{'concept contributions':20s} largest |clipdet - peer| {diff:.2e}")


if __name__ == "__main__":
    main()
