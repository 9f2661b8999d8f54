"""The CUDA path (skipped without a GPU; `pytest -m cuda` on a GPU host): the same LLRs as on
CPU in fp32, bounded differences in bf16 / fp16, --compile, pinned-memory batches with hostile
rows, channels-last ResNet tiled vs untiled. The out-of-memory case is simulated and runs
everywhere."""

import numpy as np
import pandas as pd
import pytest
import torch
from helpers import local_run_args, make_image

import main as cli
from clipdet.api import score_images

CLIP = ["tiny_a", "tiny_b"]
ALL = [*CLIP, "res_tiny"]


@pytest.fixture
def images(tmp_path):
    return [make_image(tmp_path / f"i{i}.png", size=(64 + 16 * i, 72), seed=i) for i in range(6)]


def scores(images, weights_dir, checkpoint, models, **options) -> pd.DataFrame:
    options = dict(num_workers=0, backbone_weights=checkpoint, fusion=None) | options
    return score_images(images, models, weights_dir, **options)


@pytest.mark.cuda
def test_fp32_on_cuda_equals_cpu(images, weights_dir, tiny_clip_checkpoint):
    cpu = scores(images, weights_dir, tiny_clip_checkpoint, ALL, device="cpu")
    gpu = scores(images, weights_dir, tiny_clip_checkpoint, ALL, device="cuda:0", batch_size=4)
    np.testing.assert_allclose(gpu[ALL], cpu[ALL], atol=1e-3)


@pytest.mark.cuda
@pytest.mark.parametrize("precision", ["bf16", "fp16"])
def test_half_precision_on_cuda_stays_close(images, weights_dir, tiny_clip_checkpoint, precision):
    """Bound: 2 % of the largest |LLR| plus 0.05 (bf16 keeps 8 bits of mantissa)."""
    cpu = scores(images, weights_dir, tiny_clip_checkpoint, CLIP, device="cpu")
    gpu = scores(images, weights_dir, tiny_clip_checkpoint, CLIP, device="cuda:0",
                 precision=precision)  # fmt: skip
    bound = 0.02 * float(np.abs(cpu[CLIP].to_numpy()).max()) + 0.05
    assert float(np.abs(gpu[CLIP].to_numpy() - cpu[CLIP].to_numpy()).max()) <= bound


@pytest.mark.cuda
def test_compile_gives_the_same_llrs(images, weights_dir, tiny_clip_checkpoint):
    plain = scores(images, weights_dir, tiny_clip_checkpoint, CLIP, device="cuda:0")
    compiled = scores(images, weights_dir, tiny_clip_checkpoint, CLIP, device="cuda:0",
                      compile=True)  # fmt: skip
    np.testing.assert_allclose(compiled[CLIP], plain[CLIP], atol=1e-3)


@pytest.mark.cuda
def test_pinned_batches_from_workers_with_hostile_rows(
    tmp_path, images, weights_dir, tiny_clip_checkpoint
):
    (tmp_path / "notes.png").write_text("not an image")
    names = [p.name for p in images]
    names[2:2] = ["notes.png", "missing.png"]
    csv = tmp_path / "list.csv"
    pd.DataFrame({"filename": names}).to_csv(csv, index=False)
    out = tmp_path / "gpu.csv"
    argv = ["-i", str(csv), "-o", str(out), *local_run_args(tiny_clip_checkpoint, weights_dir,
                                                           ",".join(CLIP))]  # fmt: skip
    argv = [a if a != "cpu" else "cuda:0" for a in argv]
    argv[argv.index("--num_workers") + 1] = "2"  # DataLoader workers, pin_memory on CUDA
    assert cli.main(argv) == 0
    table = pd.read_csv(out, keep_default_na=False, na_values=[""])
    assert table["error"].notna().tolist() == [False, False, True, True, False, False, False,
                                               False]  # fmt: skip
    cpu = scores(images, weights_dir, tiny_clip_checkpoint, CLIP, device="cpu")
    good = table[table["error"].isna()].reset_index(drop=True)
    np.testing.assert_allclose(good[CLIP], cpu[CLIP], atol=1e-3)


@pytest.mark.cuda
def test_channels_last_resnet_tiled_equals_untiled(tmp_path, weights_dir, tiny_clip_checkpoint):
    big = [make_image(tmp_path / "big.png", size=(300, 260), seed=3)]
    whole = scores(big, weights_dir, tiny_clip_checkpoint, ["res_tiny"], device="cuda:0",
                   tile_size=0)  # fmt: skip
    tiled = scores(big, weights_dir, tiny_clip_checkpoint, ["res_tiny"], device="cuda:0",
                   tile_size=64)  # fmt: skip
    np.testing.assert_allclose(tiled["res_tiny"], whole["res_tiny"], rtol=1e-4)


def test_a_batch_out_of_gpu_memory_marks_its_rows_and_the_run_goes_on(
    images, weights_dir, tiny_clip_checkpoint, monkeypatch
):
    """Simulated with the error CUDA raises (torch.OutOfMemoryError, a RuntimeError), thrown
    by the backbone for the second batch only."""
    from clipdet.pipeline import backbone_pass as infer

    original, calls = infer._forward, []

    def forward(members, x):
        calls.append(len(x))
        if len(calls) == 2:
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 20.00 GiB")
        return original(members, x)

    monkeypatch.setattr(infer, "_forward", forward)
    table = scores(images, weights_dir, tiny_clip_checkpoint, CLIP, device="cpu", batch_size=2)
    errors = table["error"].tolist()
    assert [bool(e) for e in errors] == [False, False, True, True, False, False]
    assert "OutOfMemoryError: CUDA out of memory" in errors[2]
    assert table.loc[[0, 1, 4, 5], CLIP].notna().all().all()
    assert table.loc[[2, 3], CLIP].isna().all().all()


@pytest.mark.cuda
def test_jpegs_decoded_on_the_gpu_stay_close_to_the_pil_path(tmp_path, weights_dir,
                                                             tiny_clip_checkpoint):  # fmt: skip
    photos = [make_image(tmp_path / f"p{i}.jpg", size=(900, 700), seed=i, format="JPEG")
              for i in range(4)]  # fmt: skip
    exact = scores(photos, weights_dir, tiny_clip_checkpoint, CLIP, device="cpu")
    gpu = scores(photos, weights_dir, tiny_clip_checkpoint, CLIP, device="cuda:0", decode="gpu")
    assert float(np.abs(gpu[CLIP].to_numpy() - exact[CLIP].to_numpy()).max()) < 0.02
