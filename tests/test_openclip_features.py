"""Resolving CLIP backbone weights: explicit file, Hugging Face cache, clear error otherwise."""

import shutil

import pytest
import torch
from helpers import TINY_MODEL

from clipdet.models.backbones import create_openclip_features, resolve_checkpoint
from clipdet.models.registry import register_backbone
from clipdet.models.weights import WeightsUnavailableError

REVISION = "0123456789abcdef0123456789abcdef01234567"


def _hub_cache(tmp_path, repo_id: str, filename: str, source) -> str:
    repo = tmp_path / "hub" / ("models--" + repo_id.replace("/", "--"))
    snapshot = repo / "snapshots" / REVISION
    snapshot.mkdir(parents=True)
    shutil.copy(source, snapshot / filename)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(REVISION)
    return str(tmp_path / "hub")


def test_backbone_found_in_hub_cache_without_network(tmp_path, tiny_clip_checkpoint):
    spec = register_backbone("tiny_hub", TINY_MODEL, hf_hub="clipdet-test/tiny-vit/")
    cache = _hub_cache(
        tmp_path, "clipdet-test/tiny-vit", "open_clip_pytorch_model.bin", tiny_clip_checkpoint
    )
    path = resolve_checkpoint(spec, cache_dir=cache)
    assert path.name == "open_clip_pytorch_model.bin" and REVISION in str(path)
    from_cache = create_openclip_features(spec, cache_dir=cache)
    from_file = create_openclip_features(spec, checkpoint=tiny_clip_checkpoint)
    x = torch.randn(2, 3, 224, 224)
    with torch.no_grad():
        assert torch.equal(from_cache(x)["embed"], from_file(x)["embed"])


def test_missing_local_backbone_file_is_a_clear_error(tmp_path):
    spec = register_backbone("tiny_nofile", TINY_MODEL)
    with pytest.raises(WeightsUnavailableError, match="backbone checkpoint not found"):
        create_openclip_features(spec, checkpoint=tmp_path / "nope.bin")


def test_backbone_without_source_asks_for_backbone_weights():
    spec = register_backbone("tiny_nosource", TINY_MODEL)
    with pytest.raises(WeightsUnavailableError, match="--backbone_weights"):
        resolve_checkpoint(spec)
