import numpy as np
import pytest
import torch
from PIL import Image

from clipdet.models.preprocess import PreprocessCfg, make_transform, transform_key


def _image(w, h, seed=0):
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8))


def test_clip224_resizes_short_side_bicubic_then_centre_crops():
    image = _image(300, 150)
    out = make_transform("Clip224", "clip")(image)
    assert out.shape == (3, 224, 224)
    resized = image.resize((448, 224), Image.BICUBIC)  # short side 150 -> 224, PIL bicubic
    crop = np.asarray(resized)[:, 112:336].astype(np.float32) / 255
    mean = np.array([0.48145466, 0.4578275, 0.40821073], dtype=np.float32)
    std = np.array([0.26862954, 0.26130258, 0.27577711], dtype=np.float32)
    expected = torch.from_numpy(((crop - mean) / std).transpose(2, 0, 1))
    torch.testing.assert_close(out, expected, atol=1e-5, rtol=0)


def test_null_patch_size_keeps_the_full_image_with_imagenet_normalisation():
    image = _image(33, 17)
    out = make_transform(None, "resnet")(image)
    assert out.shape == (3, 17, 33)
    expected = (np.asarray(image)[0, 0, 0] / 255 - 0.485) / 0.229
    assert float(out[0, 0, 0]) == pytest.approx(expected, abs=1e-5)


def test_integer_patch_size_centre_crops():
    out = make_transform(16, "clip")(_image(40, 30))
    assert out.shape == (3, 16, 16)


def test_transform_keys_group_identical_preprocessing(weights_dir, tiny_clip_checkpoint):
    from clipdet.pipeline.scoring import load_models

    names = ["tiny_a", "tiny_b", "tiny_proj", "res_tiny"]
    keys = [
        m.transform_key
        for m in load_models(names, weights_dir, backbone_weights=tiny_clip_checkpoint)
    ]
    assert keys[0] == keys[1] == keys[2] != keys[3]  # three CLIP heads: one preprocessing
    every = {transform_key(p, n) for p in (None, "Clip224", 64, 32) for n in ("clip", "resnet")}
    assert len(every) == 8  # any difference in size or normalisation is another key

    # what the pipeline reads of a preprocessing is declared, not parsed from its key
    full, crop = PreprocessCfg.reference(None, "resnet"), PreprocessCfg.reference(64, "resnet")
    assert full.full_resolution and full.size is None and full.key == "full_resnet"
    assert not crop.full_resolution and crop.size == 64 and crop.key == "crop64_resnet"
    clip = PreprocessCfg.reference("Clip224", "clip")
    assert clip.is_clip224 and clip.size == 224 and clip.norm_type == "clip"
    grids = PreprocessCfg.reference("FiveCrops504p14", "clip")
    assert (grids.size, grids.patch, grids.key) == (504, 14, "fivecrops504p14_clip")
    assert not grids.is_clip224 and not grids.full_resolution


@pytest.mark.parametrize(
    "patch_size,norm_type,message",
    [
        ("Clip336", "clip", "unsupported patch_size 'Clip336'"),
        (224, "imagenet", "unknown norm_type"),
    ],
)
def test_bad_preprocessing_config_is_a_clear_error(patch_size, norm_type, message):
    with pytest.raises(ValueError, match=message):
        make_transform(patch_size, norm_type)


def test_peer_resize_specs_crop_where_their_libraries_do():
    """``Resize<side>[Crop<size>]<filter>[Floor|Tensor]``: the shorter side resized (the longer
    truncated), then a centre crop whose odd offset torchvision rounds half to even and Hugging
    Face's processors round down; ``Tensor`` resizes the uint8 tensor (torchvision v2)."""
    from torchvision import transforms as T

    from clipdet.constants import OPENAI_DATASET_MEAN, OPENAI_DATASET_STD

    rng = np.random.default_rng(0)
    image = Image.fromarray(rng.integers(0, 256, (97, 61, 3), dtype=np.uint8))  # W 61, H 97
    resized = image.resize((40, int(40 * 97 / 61)), Image.BICUBIC)  # 40 x 63: 23 px to crop
    assert resized.size == (40, 63)
    to_tensor = T.ToTensor()
    floor = make_transform("Resize40Crop40BicubicFloor", "clip")
    plain = make_transform("Resize40Bicubic", "clip")
    normalise = T.Normalize(OPENAI_DATASET_MEAN, OPENAI_DATASET_STD)
    torch.testing.assert_close(floor(image), normalise(to_tensor(resized.crop((0, 11, 40, 51)))))
    torch.testing.assert_close(plain(image), normalise(to_tensor(resized.crop((0, 12, 40, 52)))))
    tensor = make_transform("Resize40BicubicTensor", "clip")(image)
    assert tensor.shape == (3, 40, 40) and not torch.equal(tensor, floor(image))
    assert (tensor - floor(image)).abs().max() < 0.1  # the kernels differ by a grey level or so
    cfg = PreprocessCfg.reference("Resize440Crop384Bilinear", "resnet")
    assert (cfg.kind, cfg.size, cfg.key) == ("resize_crop", 384, "Resize440Crop384Bilinear_resnet")
    with pytest.raises(ValueError, match="at most the resized side"):
        PreprocessCfg.reference("Resize300Crop384Bilinear", "clip")
