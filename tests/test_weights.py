"""Model folders, safe loading, and checksum-verified download over a loopback HTTP server."""

import hashlib
import os
from pathlib import Path

import pytest
import torch
import yaml
from helpers import TINY_MODEL

from clipdet.models import weights as W
from clipdet.models.registry import KnownDetector, get_backbone, known_detectors
from clipdet.models.weights import (
    ChecksumError,
    UnknownModelError,
    WeightsUnavailableError,
    load_model_config,
    load_state_dict,
    resolve_weights_file,
)


def _serve_official_layout(root: Path, name: str) -> bytes:
    state = {"fc.weight": torch.randn(1, 1024), "fc.bias": torch.randn(1)}
    (root / name).mkdir()
    torch.save({"model": state}, root / name / "weights.pth")
    return (root / name / "weights.pth").read_bytes()


def _with_sha(monkeypatch, name: str, sha: str):
    known = dict(known_detectors())
    known[name] = KnownDetector(**{**known[name].__dict__, "sha256": sha})
    monkeypatch.setattr(W, "known_detectors", lambda: known)


def test_known_detectors_declare_the_official_checksums():
    known = known_detectors()
    assert known["clipdet_latent10k_plus"].sha256.startswith("1c9c9f48a47d")
    assert known["Corvi2023"].config["arch"] == "res50nodown"
    assert known["clipdet_latent10k"].url.endswith("/weights/clipdet_latent10k/weights.pth")


def test_missing_known_model_is_downloaded_verified_and_config_written(
    tmp_path, http_root, monkeypatch
):
    root, base, hits = http_root
    data = _serve_official_layout(root, "clipdet_latent10k")
    _with_sha(monkeypatch, "clipdet_latent10k", hashlib.sha256(data).hexdigest())
    monkeypatch.setenv(W.BASE_URL_ENV, base)
    weights_dir = tmp_path / "weights"

    config = load_model_config("clipdet_latent10k", weights_dir)
    assert config.arch == "opencliplinearnext_clipL14commonpool" and config.task == "detection"
    written = yaml.safe_load((weights_dir / "clipdet_latent10k" / "config.yaml").read_text())
    assert written == config.keys and config.weights_file == written["weights_file"]
    path = resolve_weights_file("clipdet_latent10k", config, weights_dir)
    assert path.read_bytes() == data
    assert hits == ["/clipdet_latent10k/weights.pth"]
    assert sorted(os.listdir(path.parent)) == [
        "config.yaml",
        "weights.pth",
    ]  # no temporary file left

    resolve_weights_file("clipdet_latent10k", config, weights_dir)  # present: no second download
    assert len(hits) == 1


def test_checksum_mismatch_leaves_no_file(tmp_path, http_root, monkeypatch):
    root, base, _ = http_root
    _serve_official_layout(root, "clipdet_latent10k")
    _with_sha(monkeypatch, "clipdet_latent10k", "0" * 64)
    monkeypatch.setenv(W.BASE_URL_ENV, base)
    config = load_model_config("clipdet_latent10k", tmp_path)
    with pytest.raises(ChecksumError, match="expected sha256 0000"):
        resolve_weights_file("clipdet_latent10k", config, tmp_path)
    assert os.listdir(tmp_path / "clipdet_latent10k") == ["config.yaml"]


def test_an_unreachable_host_is_said_in_a_few_words(tmp_path, monkeypatch):
    """requests' own message repeats the URL and the retry policy; the error says it once."""
    import requests

    def unreachable(session, url, **kwargs):
        request = requests.Request("GET", url).prepare()
        raise requests.ConnectionError(
            f"HTTPSConnectionPool(host='mirror.example', port=443): Max retries exceeded with "
            f"url: {url} (Caused by NameResolutionError(...))",
            request=request,
        )

    monkeypatch.setenv(W.BASE_URL_ENV, "https://mirror.example/w")
    monkeypatch.setattr(requests.Session, "get", unreachable)
    config = load_model_config("Corvi2023", tmp_path)
    with pytest.raises(WeightsUnavailableError) as info:
        resolve_weights_file("Corvi2023", config, tmp_path)
    message = str(info.value)
    assert "(no connection to mirror.example)" in message
    assert "Max retries" not in message and message.count("mirror.example/w/Corvi2023") == 1


def test_without_network_the_error_says_which_file_goes_where(tmp_path):
    config = load_model_config("Corvi2023", tmp_path)
    with pytest.raises(WeightsUnavailableError) as info:
        resolve_weights_file("Corvi2023", config, tmp_path)
    message = str(info.value)
    assert str((tmp_path / "Corvi2023" / "weights.pth").resolve()) in message
    assert "0168451e84a2a35d" in message
    assert os.listdir(tmp_path / "Corvi2023") == ["config.yaml"]


def test_unknown_model_lists_valid_choices(tmp_path):
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "config.yaml").write_text("arch: res50nodown\n")
    with pytest.raises(UnknownModelError, match="unknown model 'nope'.*Corvi2023.*mine"):
        load_model_config("nope", tmp_path)


def test_incomplete_config_names_missing_keys(tmp_path):
    (tmp_path / "mine").mkdir()
    from clipdet.models.factory import create_detector

    (tmp_path / "mine" / "config.yaml").write_text("arch: res50nodown\n")
    with pytest.raises(ValueError, match="lacks the keys weights_file"):
        load_model_config("mine", tmp_path)
    # each family declares the keys it reads, all named at once
    with pytest.raises(ValueError, match="lacks the keys norm_type, patch_size, weights_file"):
        create_detector("mine", tmp_path)
    (tmp_path / "mine" / "config.yaml").write_text("arch: probe\nweights_file: w.pth\n")
    with pytest.raises(ValueError, match="config.yaml lacks the keys backbone$"):
        create_detector("mine", tmp_path)


@pytest.mark.parametrize("wrapper", ["model", "state_dict", "net", None])
def test_state_dict_wrappers_and_module_prefix(tmp_path, wrapper):
    state = {"module.fc.weight": torch.ones(1, 3), "module.fc.bias": torch.zeros(1)}
    path = tmp_path / "w.pth"
    torch.save({wrapper: state} if wrapper else state, path)
    loaded = load_state_dict(path)
    assert sorted(loaded) == ["fc.bias", "fc.weight"]
    assert torch.equal(loaded["fc.weight"], torch.ones(1, 3))


class _Exploit:
    """Unpickling this calls ``marker.touch()``: a file appears if the payload ran."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


def test_pickled_code_is_refused_and_never_runs(tmp_path):
    marker = tmp_path / "payload_ran"
    path = tmp_path / "evil.pth"
    torch.save({"model": {"fc.weight": _Exploit(marker)}}, path)  # a normal-looking .pth
    with pytest.raises(ValueError, match="cannot load weights safely"):
        load_state_dict(path)
    assert not marker.exists()


def test_official_url_is_used_and_named_when_offline(tmp_path, monkeypatch):
    """Without the test override, the download goes to the official URL; offline, the error
    names that URL, the destination and the checksum."""
    import requests

    monkeypatch.delenv(W.BASE_URL_ENV)
    asked = []

    def offline(session, url, **kwargs):
        asked.append(url)
        raise requests.ConnectionError("no network")

    monkeypatch.setattr(requests.Session, "get", offline)
    config = load_model_config("clipdet_latent10k_plus", tmp_path)
    with pytest.raises(WeightsUnavailableError) as info:
        resolve_weights_file("clipdet_latent10k_plus", config, tmp_path)
    official = (
        "https://media.githubusercontent.com/media/grip-unina/ClipBased-SyntheticImageDetection"
        "/main/weights/clipdet_latent10k_plus/weights.pth"
    )
    assert asked == [official]
    message = str(info.value)
    assert official in message and "1c9c9f48a47d" in message
    assert str((tmp_path / "clipdet_latent10k_plus" / "weights.pth").resolve()) in message


def _hub_snapshot(cache: Path, repo_id: str, files: dict[str, bytes]) -> Path:
    """A Hugging Face hub cache entry as huggingface_hub lays it out."""
    repo = cache / f"models--{repo_id.replace('/', '--')}"
    snapshot = repo / "snapshots" / ("a" * 40)
    snapshot.mkdir(parents=True)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text("a" * 40)
    for name, data in files.items():
        (snapshot / name).write_bytes(data)
    return snapshot


def test_pretrained_tag_is_found_in_the_hub_cache_safetensors_first(tmp_path, monkeypatch):
    import open_clip

    from clipdet.models.backbones import resolve_checkpoint

    spec = get_backbone("clipL14commonpool")
    repo_id = "laion/CLIP-ViT-L-14-CommonPool.XL-s13B-b90K"  # open_clip's tag -> hub repo
    both = _hub_snapshot(
        tmp_path / "both",
        repo_id,
        {"open_clip_model.safetensors": b"s", "open_clip_pytorch_model.bin": b"b"},
    )
    found = resolve_checkpoint(spec, cache_dir=str(tmp_path / "both"))
    assert found == both / "open_clip_model.safetensors"
    only_bin = _hub_snapshot(tmp_path / "bin", repo_id, {"open_clip_pytorch_model.bin": b"b"})
    assert resolve_checkpoint(spec, cache_dir=str(tmp_path / "bin")) == (
        only_bin / "open_clip_pytorch_model.bin"
    )

    def offline(cfg, cache_dir=None):
        raise OSError("offline")

    monkeypatch.setattr(open_clip, "download_pretrained", offline)
    with pytest.raises(WeightsUnavailableError, match=repo_id):  # not cached, no network
        resolve_checkpoint(spec, cache_dir=str(tmp_path / "empty"))


def test_safetensors_backbone_from_the_hub_cache_gives_the_same_features(
    tmp_path, tiny_clip_checkpoint
):
    from safetensors.torch import save_file

    from clipdet.models.backbones import create_openclip_features
    from clipdet.models.registry import register_backbone

    state = torch.load(tiny_clip_checkpoint, weights_only=True)
    _hub_snapshot(
        tmp_path / "hub",
        "test-org/tiny",
        {"open_clip_model.safetensors": b""},
    )
    snapshot = next((tmp_path / "hub").rglob("open_clip_model.safetensors"))
    save_file({k: v.contiguous() for k, v in state.items()}, snapshot)
    spec = register_backbone("tiny_hub_test", TINY_MODEL, hf_hub="test-org/tiny/")
    from_hub = create_openclip_features(spec, cache_dir=str(tmp_path / "hub"))
    from_bin = create_openclip_features(spec, checkpoint=tiny_clip_checkpoint)
    x = torch.randn(2, 3, 224, 224)
    with torch.no_grad():
        torch.testing.assert_close(from_hub(x), from_bin(x), atol=0, rtol=0)  # every layer


def test_a_training_checkpoint_with_optimizer_state_loads_as_the_bare_weights(
    tmp_path, weights_dir
):
    """Corvi2023's official file holds {'model', 'optimizer' (Adam state), 'total_steps'}:
    it loads with weights_only=True and scores as its bare 'model' weights do."""
    from helpers import make_image, resnet_state

    from clipdet.api import score_images

    state = resnet_state(4)  # the shared fixture's res_tiny weights
    params = [torch.nn.Parameter(v.clone()) for v in state.values() if v.is_floating_point()]
    optimizer = torch.optim.Adam(params[:5], lr=1e-4)
    sum(p.sum() for p in params[:5]).backward()
    optimizer.step()
    assert optimizer.state_dict()["state"]  # exp_avg, exp_avg_sq and step for 5 tensors
    folder = tmp_path / "corvi_like"
    folder.mkdir()
    config = yaml.safe_load((weights_dir / "res_tiny" / "config.yaml").read_text())
    (folder / "config.yaml").write_text(yaml.safe_dump(config | {"model_name": "corvi_like"}))
    torch.save(
        {"model": state, "optimizer": optimizer.state_dict(), "total_steps": 123_456},
        folder / "weights.pth",
    )
    loaded = W.load_state_dict(folder / "weights.pth", mmap=True)
    assert set(loaded) == set(state)
    image = make_image(tmp_path / "a.png", size=(64, 48), seed=9)
    common = dict(device="cpu", num_workers=0, fusion=None)
    shared = score_images([image], ["res_tiny"], weights_dir, **common)["res_tiny"][0]
    corvi = score_images([image], ["corvi_like"], tmp_path, **common)["corvi_like"][0]
    assert corvi == shared


def test_an_interrupted_weights_download_resumes_where_it_stopped(tmp_path, http_root, monkeypatch):
    """The first transfer breaks after 1000 bytes (the partial file is kept and the error
    says so); the next run asks for the rest with an HTTP Range request. This test server
    ignores ranges and sends the whole file, which is then written from the start; a 206
    answer appended to the partial file is tested with the dataset downloads (same fetch)."""
    root, base, hits = http_root
    data = _serve_official_layout(root, "clipdet_latent10k")
    _with_sha(monkeypatch, "clipdet_latent10k", hashlib.sha256(data).hexdigest())
    monkeypatch.setenv(W.BASE_URL_ENV, base)
    config = load_model_config("clipdet_latent10k", tmp_path)
    import clipdet.download as D

    original = D._write_body

    def broken(response, part, start, *args):
        part.write_bytes(next(response.iter_content(1000)))
        raise D.DownloadError("connection closed after 1000 bytes")

    monkeypatch.setattr(D, "_write_body", broken)
    with pytest.raises(WeightsUnavailableError, match="resumes on the next run"):
        resolve_weights_file("clipdet_latent10k", config, tmp_path)
    part = tmp_path / "clipdet_latent10k" / "weights.pth.part"
    assert part.stat().st_size == 1000
    ranges = []
    monkeypatch.setattr(D, "_write_body", lambda response, *a: ranges.append(
        response.request.headers.get("Range")) or original(response, *a))  # fmt: skip
    path = resolve_weights_file("clipdet_latent10k", config, tmp_path)
    assert ranges == ["bytes=1000-"] and path.read_bytes() == data and not part.exists()


def test_a_model_config_is_typed_and_names_the_key_a_family_lacks():
    from clipdet.models.model_config import ModelConfig

    config = ModelConfig.from_mapping({"arch": "probe", "weights_file": "w.pth", "layer": 3}, "m")
    assert (config.arch, config.model_name, config.weights_file, config.task) == (
        "probe", "m", "w.pth", "detection",
    )  # fmt: skip
    assert config.get("layer") == 3 and config.get("block") is None
    with pytest.raises(ValueError, match=r"model 'm': config.yaml lacks 'backbone' \(arch probe\)"):
        config.require("backbone")
    with pytest.raises(ValueError, match="model 'x': config.yaml lacks 'arch'"):
        ModelConfig.from_mapping({"weights_file": "w.pth"}, "x")
