"""Provenance evidence (--provenance): files made here the way generators and signers write
them — WebUI and ComfyUI PNG chunks, IPTC XMP in JPEG/PNG/WebP, SDXL and SD v1 watermarks, C2PA
manifests signed with a certificate chain made here — camera files without evidence, and every
hostile case the issue names; then whole runs through the command line."""

import io
import json
import struct
import zlib

import numpy as np
import pandas as pd
import pytest
from helpers import ctrl_c_after, local_run_args
from PIL import Image

import compute_metrics as metrics_cli
import main as cli
from clipdet.provenance import ProvenanceReader
from clipdet.provenance.samples import (
    AI,
    COMFY_PROMPT,
    COMFY_WORKFLOW,
    WEBUI,
    c2pa_signed,
    certificate_chain,
    jpeg_bytes,
    picture,
    png_bytes,
    xmp_packet,
)
from clipdet.provenance.watermarks import WATERMARKS, bit_errors, embed

pytest.importorskip("c2pa")  # the [provenance] extra; requirements-dev.txt installs it


def read(data: bytes, trust: str | None = None):
    rgb = np.asarray(Image.open(io.BytesIO(data)).convert("RGB"))
    return ProvenanceReader(trust).read(data, rgb)


# ---- generator parameters and IPTC ----------------------------------------------------------


def test_webui_parameters_in_png_and_in_a_jpeg_user_comment():
    found = read(png_bytes(picture(), texts=[("parameters", WEBUI)]))
    assert found.tokens == ["a1111:sd_xl_base_1.0"] and found.generator == "sd_xl_base_1.0"
    exif = Image.Exif()
    user_comment = b"UNICODE\x00" + WEBUI.encode("utf-16-be")  # as WebUI (piexif) writes it
    exif.get_ifd(0x8769)[0x9286] = user_comment
    found = read(jpeg_bytes(picture(), exif=exif))
    assert found.tokens == ["a1111:sd_xl_base_1.0"]


def test_comfyui_graphs_name_the_checkpoint():
    found = read(png_bytes(picture(), texts=[("prompt", json.dumps(COMFY_PROMPT))]))
    assert found.tokens == ["comfyui:flux1-dev"] and found.generator == "flux1-dev"
    found = read(png_bytes(picture(), texts=[("workflow", json.dumps(COMFY_WORKFLOW))]))
    assert found.tokens == ["comfyui:sd3.5_large"]


@pytest.mark.parametrize("fmt", ["jpeg", "png", "webp"])
def test_iptc_digital_source_type_in_xmp(fmt):
    packet = xmp_packet(system="DALL-E 3")
    if fmt == "jpeg":
        data = jpeg_bytes(picture(), xmp=packet)
    elif fmt == "png":
        data = png_bytes(picture(), itxt=[("XML:com.adobe.xmp", packet.decode())])
    else:
        buffer = io.BytesIO()
        Image.fromarray(picture()).save(buffer, "WEBP", xmp=packet)
        data = buffer.getvalue()
    found = read(data)
    assert found.tokens == ["iptc:trainedAlgorithmicMedia(DALL-E 3)"]
    assert found.generator == "DALL-E 3"


def test_exif_software_names_a_generator_and_a_camera_names_none():
    exif = Image.Exif()
    exif[0x0131] = "Adobe Firefly"
    assert read(jpeg_bytes(picture(), exif=exif)).tokens == ["exif:Adobe Firefly"]
    camera = Image.Exif()
    camera[0x010F], camera[0x0110], camera[0x0131] = "Canon", "Canon EOS R5", "Firmware 1.8.1"
    camera.get_ifd(0x8769)[0x9286] = b"ASCII\x00\x00\x00holiday"
    found = read(
        jpeg_bytes(
            picture(),
            exif=camera,
            xmp=xmp_packet(source="http://cv.iptc.org/newscodes/digitalsourcetype/digitalCapture"),
        )
    )
    assert found.tokens == [] and found.generator == ""


# ---- watermarks -----------------------------------------------------------------------------


# A picture that carries both marks: dwtDct loses a mark on about a third of pictures, those
# whose chroma detail outweighs the embedding step (measured in docs/provenance.md).
CARRIER = 1


@pytest.mark.parametrize("mark", WATERMARKS, ids=lambda m: m.name)
def test_stable_diffusion_watermarks_after_a_png_round_trip(mark):
    marked = embed(picture(512, 512, seed=CARRIER), mark)
    assert bit_errors(marked, mark) == 0  # embedded as its pipeline does
    found = read(png_bytes(marked))
    assert found.tokens == [f"watermark:{mark.name}"] and found.generator == mark.generator
    assert read(png_bytes(picture(512, 512, seed=CARRIER))).tokens == []  # unmarked


def test_jpeg_90_removes_the_sdxl_watermark_and_nothing_false_is_found():
    """Measured: JPEG 90 leaves 0 of 100 SDXL marks readable (docs/provenance.md); the row is
    scored and no other mark is claimed."""
    marked = embed(picture(512, 512, seed=CARRIER), WATERMARKS[0])
    assert read(png_bytes(marked)).tokens == ["watermark:sdxl"]
    assert (
        bit_errors(
            np.asarray(Image.open(io.BytesIO(jpeg_bytes(marked, quality=90)))), WATERMARKS[0]
        )
        > 10
    )
    assert read(jpeg_bytes(marked, quality=90)).tokens == []


def test_only_jpegs_of_quality_97_and_up_are_searched_for_watermarks(monkeypatch):
    """A JPEG at quality 100 can keep a mark; below ~97 compression was measured to erase
    them, so those pixels are not searched (the search costs ~0.2 s per megapixel)."""
    import clipdet.provenance as provenance

    marked = embed(picture(512, 512, seed=CARRIER), WATERMARKS[1])
    assert read(jpeg_bytes(marked, quality=100)).tokens == ["watermark:sd1"]
    searched = []
    monkeypatch.setattr(provenance, "find_watermarks", lambda rgb: searched.append(1) or [])
    read(jpeg_bytes(marked, quality=95))
    assert searched == []
    read(jpeg_bytes(marked, quality=98))
    assert searched == [1]


# ---- C2PA -----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def signed():
    """A JPEG and a PNG signed by "OpenAI Test", the anchors that trust it, and another's."""
    chain, key, root = certificate_chain("OpenAI Test")
    _, _, other_root = certificate_chain("Someone Else")
    jpeg = c2pa_signed(jpeg_bytes(picture()), "image/jpeg", chain, key)
    png = c2pa_signed(png_bytes(picture()), "image/png", chain, key)
    return {"jpeg": jpeg, "png": png, "root": root, "other": other_root, "chain": (chain, key)}


@pytest.mark.parametrize("fmt", ["jpeg", "png"])
def test_c2pa_valid_untrusted_without_anchors_trusted_with_them(signed, fmt):
    found = read(signed[fmt])
    assert found.tokens == ["c2pa:trainedAlgorithmicMedia(valid, untrusted; OpenAI Test)"]
    assert found.generator == "DALL-E"
    trusted = read(signed[fmt], trust=signed["root"])
    assert trusted.tokens == ["c2pa:trainedAlgorithmicMedia(valid, trusted; OpenAI Test)"]
    other = read(signed[fmt], trust=signed["other"])  # an anchor that is not the signer's
    assert other.tokens == ["c2pa:trainedAlgorithmicMedia(valid, untrusted; OpenAI Test)"]


def test_c2pa_pixels_edited_after_signing_are_a_hash_mismatch(signed):
    data = bytearray(signed["jpeg"])
    scan = data.rfind(b"\xff\xda")
    for i in range(scan + 300, scan + 340):  # entropy-coded pixels, after the manifest
        data[i] ^= 0x5A
    found = read(bytes(data)) if _decodes(bytes(data)) else ProvenanceReader().read(bytes(data))
    assert found.tokens == ["c2pa:trainedAlgorithmicMedia(invalid: hash mismatch; OpenAI Test)"]


def _decodes(data: bytes) -> bool:
    try:
        Image.open(io.BytesIO(data)).convert("RGB")
        return True
    except OSError:
        return False


def test_c2pa_forged_or_truncated_manifests_are_unreadable_or_invalid(signed):
    data = signed["jpeg"]
    manifest_at = data.find(b"\xff\xeb")  # APP11: the JUMBF manifest store
    forged = bytearray(data)
    forged[manifest_at + 400] ^= 0xFF
    tokens = ProvenanceReader().read(bytes(forged)).tokens
    assert tokens in (
        ["c2pa:unreadable"],
        ["c2pa:trainedAlgorithmicMedia(invalid signature; OpenAI Test)"],
    )
    truncated = data[: manifest_at + 600]  # cut inside the manifest
    assert ProvenanceReader().read(truncated).tokens == ["c2pa:unreadable"]


def test_a_remote_manifest_url_in_a_file_is_never_fetched(signed, http_root):
    root, base, hits = http_root
    data = c2pa_signed(jpeg_bytes(picture()), "image/jpeg", *signed["chain"],
                       remote_url=f"{base}/manifest.c2pa")  # fmt: skip
    (root / "manifest.c2pa").write_bytes(b"not served")
    found = ProvenanceReader().read(data)
    assert hits == [] and found.tokens == ["c2pa:unreadable"]


# ---- hostile files --------------------------------------------------------------------------

BILLION_LAUGHS = (
    '<?xml version="1.0"?><!DOCTYPE lolz [<!ENTITY lol "lol">'
    '<!ENTITY lol2 "&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;">'
    '<!ENTITY lol3 "&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;">]>'
    '<x:xmpmeta xmlns:x="adobe:ns:meta/"><rdf:RDF xmlns:rdf="http://www.w3.org/1999/02/22-rdf-'
    'syntax-ns#"><rdf:Description xmlns:Iptc4xmpExt="http://iptc.org/std/Iptc4xmpExt/2008-02-29/"'
    f' Iptc4xmpExt:DigitalSourceType="{AI}&lol3;"/></rdf:RDF></x:xmpmeta>'
).encode()
EXTERNAL = (
    b'<?xml version="1.0"?><!DOCTYPE x [<!ENTITY ext SYSTEM "file:///etc/passwd">]>'
    b'<x:xmpmeta xmlns:x="adobe:ns:meta/">&ext;</x:xmpmeta>'
)


@pytest.mark.parametrize("packet", [BILLION_LAUGHS, EXTERNAL, b"<x:xmpmeta><not closed"],
                         ids=["entity-bomb", "external-entity", "not-xml"])  # fmt: skip
def test_xmp_that_is_not_plain_xml_is_unreadable_never_expanded(packet):
    found = read(jpeg_bytes(picture(), xmp=packet))
    assert found.tokens == ["iptc:unreadable"]


def png_with_huge_text(rgb, size=100 * 1024 * 1024) -> bytes:
    """A PNG whose tEXt chunk 'parameters' holds ``size`` bytes, before the pixels."""
    plain = png_bytes(rgb)
    body = b"parameters\x00" + b"x" * size
    chunk = struct.pack(">I", len(body)) + b"tEXt" + body
    chunk += struct.pack(">I", zlib.crc32(b"tEXt" + body) & 0xFFFFFFFF)
    header_end = 8 + 25  # signature + IHDR
    return plain[:header_end] + chunk + plain[header_end:]


@pytest.mark.slow
def test_hostile_files_in_a_run_are_scored_with_unreadable_evidence(
    tmp_path, weights_dir, tiny_clip_checkpoint, signed
):
    """Every hostile case beside controls, through main.py --provenance: each row scored (or
    failed only for its pixels), the evidence 'unreadable' for its kind, the run never stops,
    LLRs identical to a run without --provenance."""
    rgb = picture(300, 300)
    files = {
        "bomb_xmp.jpg": jpeg_bytes(rgb, xmp=BILLION_LAUGHS),
        "huge_text.png": png_with_huge_text(rgb),
        "forged_comfy.png": png_bytes(rgb, texts=[("prompt", "{not json")]),
        "tiny.png": png_bytes(np.zeros((1, 1, 3), np.uint8)),
        "sixteen.png": None,
        "truncated_c2pa.jpg": signed["jpeg"][: signed["jpeg"].find(b"\xff\xeb") + 600],
        "camera.jpg": jpeg_bytes(rgb),
        "webui.png": png_bytes(rgb, texts=[("parameters", WEBUI)]),
        "signed.jpg": signed["jpeg"],
    }
    for name, data in files.items():
        if data is None:
            Image.fromarray((np.arange(300 * 300).reshape(300, 300) * 7).astype(np.uint16)).save(
                tmp_path / name
            )
        else:
            (tmp_path / name).write_bytes(data)
    names = list(files)
    pd.DataFrame({"filename": names}).to_csv(tmp_path / "list.csv", index=False)
    common = [
        "-i",
        str(tmp_path / "list.csv"),
        *local_run_args(tiny_clip_checkpoint, weights_dir, "tiny_a"),
    ]
    assert cli.main([*common, "-o", str(tmp_path / "with.csv"), "--provenance"]) == 0
    assert cli.main([*common, "-o", str(tmp_path / "without.csv")]) == 0
    table = pd.read_csv(tmp_path / "with.csv", keep_default_na=False)
    plain = pd.read_csv(tmp_path / "without.csv", keep_default_na=False)
    expected = ["filename", "tiny_a", "fusion", "provenance", "provenance_generator", "error"]
    assert list(table.columns) == expected
    assert list(plain.columns) == ["filename", "tiny_a", "fusion", "error"]  # off by default
    np.testing.assert_array_equal(table["tiny_a"], plain["tiny_a"])  # LLRs do not change
    evidence = dict(zip(table["filename"], table["provenance"], strict=True))
    assert evidence["bomb_xmp.jpg"] == "iptc:unreadable"
    assert evidence["huge_text.png"] == "a1111:unreadable"
    assert evidence["forged_comfy.png"] == "comfyui:unreadable"
    assert evidence["tiny.png"] == "watermark:unreadable(under 256x256 pixels)"
    assert evidence["sixteen.png"] == "watermark:unreadable(high bit depth)"
    assert evidence["truncated_c2pa.jpg"] == "c2pa:unreadable"
    assert evidence["camera.jpg"] == ""
    assert evidence["webui.png"] == "a1111:sd_xl_base_1.0"
    assert evidence["signed.jpg"] == "c2pa:trainedAlgorithmicMedia(valid, untrusted; OpenAI Test)"
    errors = dict(zip(table["filename"], table["error"], strict=True))
    scored = [n for n in names if n != "truncated_c2pa.jpg"]  # its pixels are cut too
    assert all(errors[n] == "" for n in scored), errors
    generators = dict(zip(table["filename"], table["provenance_generator"], strict=True))
    assert generators["signed.jpg"] == "DALL-E" and generators["webui.png"] == "sd_xl_base_1.0"


def test_outputs_metrics_and_report_show_or_ignore_the_evidence(
    tmp_path, weights_dir, tiny_clip_checkpoint, signed, capsys
):
    rgb = picture(300, 300)
    (tmp_path / "real.jpg").write_bytes(jpeg_bytes(rgb))
    (tmp_path / "fake.png").write_bytes(png_bytes(rgb, texts=[("parameters", WEBUI)]))
    (tmp_path / "signed.jpg").write_bytes(signed["jpeg"])
    labels = pd.DataFrame({"filename": ["real.jpg", "fake.png", "signed.jpg"],
                           "typ": ["real", "sdxl", "dalle3"]})  # fmt: skip
    labels.to_csv(tmp_path / "list.csv", index=False)
    common = [
        "-i",
        str(tmp_path / "list.csv"),
        *local_run_args(tiny_clip_checkpoint, weights_dir, "tiny_a"),
    ]
    out = tmp_path / "scores.jsonl"
    assert cli.main([*common, "-o", str(out), "--report", str(tmp_path / "r.html")]) == 0
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert rows[1]["provenance"] == "a1111:sd_xl_base_1.0" and rows[0]["provenance"] == ""
    page = (tmp_path / "r.html").read_text()
    assert '"provenance": ["a1111:sd_xl_base_1.0"]' in page
    assert '"provenance": {"a1111": 1, "c2pa": 1}' in page  # the summary's count per kind
    assert '"provenance": ["c2pa:trainedAlgorithmicMedia(valid, untrusted; OpenAI Test)"]' in page
    csv = tmp_path / "scores.csv"
    assert cli.main([*common, "-o", str(csv), "--provenance"]) == 0
    capsys.readouterr()
    assert metrics_cli.main(["-i", str(tmp_path / "list.csv"), "-o", str(csv)]) == 0
    table = capsys.readouterr().out
    assert "tiny_a" in table and "provenance" not in table
    capsys.readouterr()
    assert (
        cli.main(
            [
                str(tmp_path / "fake.png"),
                *local_run_args(tiny_clip_checkpoint, weights_dir, "tiny_a"),
                "--provenance",
            ]
        )
        == 0
    )
    assert "a1111:sd_xl_base_1.0" in capsys.readouterr().out  # the terminal table


def test_an_interrupted_run_resumes_with_its_evidence(
    tmp_path, weights_dir, tiny_clip_checkpoint, monkeypatch, capsys
):
    """The partial file keeps each row's evidence; a resume must ask for it again (the run's
    signature records it), and then gives the file an uninterrupted run gives."""
    from clipdet.pipeline import scoring

    rgb = picture(300, 300)
    names = []
    for i in range(4):
        (tmp_path / f"{i}.png").write_bytes(png_bytes(rgb, texts=[("parameters", WEBUI)]))
        names.append(f"{i}.png")
    pd.DataFrame({"filename": names}).to_csv(tmp_path / "list.csv", index=False)
    flags = local_run_args(tiny_clip_checkpoint, weights_dir, "tiny_a")
    argv = ["-i", str(tmp_path / "list.csv"), "--batch_size", "1", *flags, "--provenance"]
    assert cli.main([*argv, "-o", str(tmp_path / "clean.csv")]) == 0
    out = tmp_path / "out.csv"
    with ctrl_c_after(monkeypatch, scoring, 2):
        assert cli.main([*argv, "-o", str(out)]) == 130
    partial = [
        json.loads(line)
        for line in (tmp_path / "out.csv.partial.jsonl").read_text().splitlines()[1:]
    ]
    assert [row["provenance"] for row in partial] == [
        ["a1111:sd_xl_base_1.0", "sd_xl_base_1.0"]
    ] * 2
    without = [a for a in argv if a != "--provenance"]
    capsys.readouterr()
    assert cli.main([*without, "-o", str(out), "--resume"]) == 2  # another kind of run
    assert "provenance" in capsys.readouterr().err
    assert cli.main([*argv, "-o", str(out), "--resume"]) == 0
    assert out.read_bytes() == (tmp_path / "clean.csv").read_bytes()
