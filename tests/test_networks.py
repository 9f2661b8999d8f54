"""Architectures: parity with the reference computation, shapes, state-dict layouts."""

import numpy as np
import open_clip
import pytest
import torch
from helpers import TINY_BACKBONE, TINY_CONFIG, TINY_MODEL, TINY_WIDTH, make_image, ram_folder
from PIL import Image
from torchvision import transforms as T
from torchvision.models import resnet50

from clipdet.models.backbones import build_visual_tower, create_openclip_features
from clipdet.models.factory import BackboneCache, create_detector
from clipdet.models.registry import BackboneSpec, get_backbone
from networks import ResNetNoDownFeatures


def reference_clip_llr(checkpoint, head: dict, image: Image.Image, next_to_last=True) -> float:
    """The reference code's computation, written out independently of clipdet: full open_clip
    model, random init then checkpoint, visual.proj dropped, encode_image(normalize=True), fc."""
    model = open_clip.create_model(TINY_MODEL, pretrained=str(checkpoint)).eval()
    if next_to_last:
        model.visual.proj = None
    transform = T.Compose(
        [
            T.Resize(224, interpolation=T.InterpolationMode.BICUBIC),
            T.CenterCrop((224, 224)),
            T.ToTensor(),
            T.Normalize((0.48145466, 0.4578275, 0.40821073), (0.26862954, 0.26130258, 0.27577711)),
        ]
    )
    with torch.no_grad():
        features = model.encode_image(transform(image)[None], normalize=True)
        return float(features @ head["fc.weight"].T + head["fc.bias"])


@pytest.mark.parametrize("name", ["tiny_a", "tiny_b", "tiny_proj"])
def test_clip_detector_matches_reference_computation(
    weights_dir, tiny_clip_checkpoint, tmp_path, name
):
    state = torch.load(weights_dir / name / "weights.pth", weights_only=True)["model"]
    head = {k.removeprefix("module."): v for k, v in state.items()}
    model = create_detector(name, weights_dir, BackboneCache(tiny_clip_checkpoint))
    for seed, size in [(0, (300, 200)), (1, (64, 500)), (2, (224, 224))]:
        image = Image.open(make_image(tmp_path / f"{seed}.png", size=size, seed=seed)).convert(
            "RGB"
        )
        with torch.no_grad():
            ours = float(model.detector(model.transform(image)[None]))
        ref = reference_clip_llr(
            tiny_clip_checkpoint, head, image, next_to_last=name != "tiny_proj"
        )
        assert ours == pytest.approx(ref, abs=1e-4)


def test_heads_on_one_backbone_share_its_module(weights_dir, tiny_clip_checkpoint):
    cache = BackboneCache(tiny_clip_checkpoint)
    a = create_detector("tiny_a", weights_dir, cache)
    b = create_detector("tiny_b", weights_dir, cache)
    proj = create_detector("tiny_proj", weights_dir, cache)
    assert a.detector.backbone is b.detector.backbone is proj.detector.backbone
    assert a.detector.backbone_key == b.detector.backbone_key
    assert proj.detector.backbone_key != a.detector.backbone_key  # another layer
    assert not torch.equal(a.detector.fc.weight, b.detector.fc.weight)


def test_backbone_is_a_registered_submodule(weights_dir, tiny_clip_checkpoint):
    """Unlike the reference's list-wrapped backbone, .to()/.half()/state_dict() reach it."""
    model = create_detector("tiny_a", weights_dir, BackboneCache(tiny_clip_checkpoint)).detector
    assert any(k.startswith("backbone.visual.") for k in model.state_dict())
    model.to(torch.float64)
    assert model.backbone.visual.conv1.weight.dtype == torch.float64


def test_vit_l14_feature_dimensions():
    spec = get_backbone("clipL14commonpool")
    assert (spec.model, spec.pretrained) == ("ViT-L-14", "commonpool_xl_s13b_b90k")
    from networks import OpenClipFeatures

    features = OpenClipFeatures(build_visual_tower(spec), embed_dim=768)
    widths = {"next_to_last": 1024, "embed": 768, 12: 1024}
    assert {layer: features.layer_width(layer) for layer in widths} == widths
    out = features.extract(torch.empty(2, 3, 224, 224, device="meta"), list(widths))
    assert {layer: tuple(v.shape) for layer, v in out.items()} == {
        layer: (2, width) for layer, width in widths.items()
    }


@pytest.mark.slow
def test_vit_l14_random_init_forward_gives_1024_features(tmp_path):
    """A ViT-L/14 image tower with random weights through our loader: built on the meta
    device and filled from one small random buffer (no full CLIP, no 5 s random init), then
    saved as a checkpoint of the image tower alone (1.2 GB: in RAM, /dev/shm, where the
    machine has it; 9 s to write to this machine's disk, 1.2 s there)."""
    visual = build_visual_tower(get_backbone("clipL14commonpool")).to_empty(device="cpu")
    noise = torch.randn(1_000_003, generator=torch.Generator().manual_seed(0)) * 0.02
    with torch.no_grad():
        for p in visual.parameters():
            flat = p.view(-1)
            flat.copy_(noise.repeat(flat.numel() // noise.numel() + 1)[: flat.numel()])
    with ram_folder(tmp_path) as folder:
        path = folder / "vitl14_visual.pth"
        torch.save({f"visual.{k}": v for k, v in visual.state_dict().items()}, path)
        del visual
        features = create_openclip_features(get_backbone("clipL14commonpool"), checkpoint=path)
    with torch.no_grad():
        out = features(torch.randn(1, 3, 224, 224), ["next_to_last"])["next_to_last"]
        # attribution's block features: the CLS token of block 12 of 24, 1024-d, same pass
        found = features.extract(torch.randn(1, 3, 224, 224), ["next_to_last", 12, -1])
    assert out.shape == (1, 1024)
    assert (features.num_blocks, features.block_width) == (24, 1024)
    assert found["next_to_last"].shape == found[12].shape == found[23].shape == (1, 1024)


def test_quick_gelu_follows_the_pretrained_tag():
    openai = build_visual_tower(get_backbone("clipL14openai"))
    commonpool = build_visual_tower(get_backbone("clipL14commonpool"))
    assert type(openai.transformer.resblocks[0].mlp.gelu).__name__ == "QuickGELU"
    assert type(commonpool.transformer.resblocks[0].mlp.gelu).__name__ == "GELU"


def test_resnet_nodown_matches_torchvision_with_stride_one_stem(weights_dir, tmp_path):
    state = torch.load(weights_dir / "res_tiny" / "weights.pth", weights_only=True)["model"]
    model = create_detector("res_tiny", weights_dir)
    backbone = model.detector.backbone
    assert isinstance(backbone, ResNetNoDownFeatures)
    assert backbone.conv1.stride == (1, 1) and backbone.maxpool.stride == 1
    assert backbone.layer2[0].conv2.stride == (2, 2)  # stride on the 3x3 conv (bottleneck v1.5)
    assert set(resnet50().state_dict()) == set(backbone.state_dict()) | {"fc.weight", "fc.bias"}

    reference = resnet50(num_classes=1)
    reference.conv1.stride, reference.maxpool.stride = (1, 1), 1
    reference.load_state_dict(state)
    reference.eval()
    x = torch.randn(2, 3, 45, 37)
    with torch.no_grad():
        np.testing.assert_allclose(model.detector(x).numpy(), reference(x)[:, 0].numpy(), atol=1e-4)


def test_full_resolution_input_keeps_image_size(weights_dir, tmp_path):
    model = create_detector("res_tiny", weights_dir)
    image = Image.open(make_image(tmp_path / "a.png", size=(37, 21))).convert("RGB")
    assert tuple(model.transform(image).shape) == (3, 21, 37)


@pytest.mark.parametrize(
    "arch,expected",
    [
        ("opencliplinearnext_clipL14commonpool", ("openclip", "clipL14commonpool", True)),
        ("opencliplinear_clipB16laion2B", ("openclip", "clipB16laion2B", False)),
        ("res50nodown", ("resnet", None, None)),
    ],
)
def test_each_arch_finds_its_family(arch, expected):
    from clipdet.models.families import find_family

    family, spec = find_family(arch)
    backbone = getattr(spec, "backbone", None)
    assert (family.name, backbone, getattr(spec, "next_to_last", None)) == expected


def test_unknown_arch_and_backbone_are_clear_errors(weights_dir, tmp_path):
    from helpers import write_model_folder

    from clipdet.models.factory import create_detector
    from clipdet.models.families import find_family

    with pytest.raises(ValueError, match="unknown arch 'vgg16'.*res50nodown"):
        find_family("vgg16")
    write_model_folder(tmp_path, "vgg", {"arch": "vgg16", "weights_file": "weights.pth"}, {})
    with pytest.raises(ValueError, match="unknown arch 'vgg16'; valid choices: .*opencliplinear"):
        create_detector("vgg", tmp_path)  # what a user with a wrong config reads
    with pytest.raises(ValueError, match="unknown CLIP backbone 'nope'.*clipL14commonpool"):
        get_backbone("nope")


def test_wrong_head_shape_is_a_clear_error(weights_dir, tiny_clip_checkpoint, tmp_path):
    from helpers import clip_config, clip_head_state, write_model_folder

    write_model_folder(tmp_path, "bad", clip_config("bad"), clip_head_state(0, dim=TINY_WIDTH + 1))
    with pytest.raises(ValueError, match=r"fc.weight has shape \(1, 65\)"):
        create_detector("bad", tmp_path, BackboneCache(tiny_clip_checkpoint))


def test_checkpoint_for_another_model_is_a_clear_error(weights_dir, tmp_path):
    spec = BackboneSpec(name="x", model="ViT-B-32")
    path = tmp_path / "wrong.pth"
    torch.save({"visual.conv1.weight": torch.zeros(1)}, path)
    with pytest.raises(ValueError, match="does not match the ViT-B-32 image tower"):
        create_openclip_features(spec, checkpoint=path)


def test_safetensors_backbone_checkpoint(tiny_clip_checkpoint, tmp_path):
    from safetensors.torch import save_file

    state = torch.load(tiny_clip_checkpoint, weights_only=True)
    path = tmp_path / "open_clip_model.safetensors"
    save_file({k: v.contiguous() for k, v in state.items()}, path)
    a = create_openclip_features(get_backbone(TINY_BACKBONE), checkpoint=path)
    b = create_openclip_features(get_backbone(TINY_BACKBONE), checkpoint=tiny_clip_checkpoint)
    x = torch.randn(1, 3, 224, 224)
    with torch.no_grad():
        assert torch.equal(a(x)["embed"], b(x)["embed"])
        found = a(x, ["next_to_last"])["next_to_last"]
        assert found.shape == (1, TINY_CONFIG["vision_cfg"]["width"])
