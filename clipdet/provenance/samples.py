"""Files that carry each kind of provenance evidence, made the way generators and signers make
them: for tests, benchmarks and demonstrations (no generator output ships with clipdet). The
C2PA helpers sign with a certificate chain made on the spot, trusted by nobody but the caller.
"""

import datetime
import io
import struct

import numpy as np
from PIL import Image
from PIL.PngImagePlugin import PngInfo

AI = "http://cv.iptc.org/newscodes/digitalsourcetype/trainedAlgorithmicMedia"
WEBUI = (
    "a lighthouse at dusk, oil painting\nNegative prompt: blurry\nSteps: 30, Sampler: DPM++ 2M "
    "Karras, CFG scale: 7, Seed: 1234, Size: 1024x1024, Model hash: 31e35c80fc, Model: "
    'sd_xl_base_1.0, Lora hashes: "a: 1, b: 2", Version: v1.9.4'
)
COMFY_PROMPT = {
    "4": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": "flux1-dev.safetensors"}},
    "6": {"class_type": "CLIPTextEncode", "inputs": {"text": "a cat", "clip": ["4", 1]}},
}
COMFY_WORKFLOW = {"nodes": [{"type": "UNETLoader", "widgets_values": ["sd3.5_large.safetensors"]}]}


def picture(h=320, w=400, seed=0) -> np.ndarray:
    """A smooth RGB picture with a little texture."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:h, 0:w].astype(np.float32)
    base = 120 + 50 * np.sin(x / 29 + seed) * np.cos(y / 37)
    colour = base[..., None] + rng.uniform(-30, 30, 3)[None, None]
    return np.clip(colour + rng.normal(0, 3, (h, w, 3)), 0, 255).astype(np.uint8)


def xmp_packet(source=AI, system="", extra="") -> bytes:
    """An XMP packet stating an IPTC digital source type (and the AI system used)."""
    ai = f"<Iptc4xmpExt:AISystemUsed>{system}</Iptc4xmpExt:AISystemUsed>" if system else ""
    return (
        '<?xpacket begin="" id="W5M0MpCehiHzreSzNTczkc9d"?>'
        f'<x:xmpmeta xmlns:x="adobe:ns:meta/">{extra}<rdf:RDF '
        'xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#"><rdf:Description '
        'xmlns:Iptc4xmpExt="http://iptc.org/std/Iptc4xmpExt/2008-02-29/" '
        f'Iptc4xmpExt:DigitalSourceType="{source}">{ai}</rdf:Description></rdf:RDF>'
        '</x:xmpmeta><?xpacket end="w"?>'
    ).encode()


def jpeg_bytes(rgb, xmp: bytes | None = None, exif=None, quality=92) -> bytes:
    """A JPEG, with an EXIF block and an XMP packet (APP1) when given."""
    buffer = io.BytesIO()
    extra = {"exif": exif} if exif is not None else {}
    Image.fromarray(rgb).save(buffer, "JPEG", quality=quality, **extra)
    data = buffer.getvalue()
    if xmp is None:
        return data
    body = b"http://ns.adobe.com/xap/1.0/\x00" + xmp
    return data[:2] + b"\xff\xe1" + struct.pack(">H", len(body) + 2) + body + data[2:]


def png_bytes(rgb, texts=(), itxt=()) -> bytes:
    """A PNG with tEXt chunks ``texts`` and compressed iTXt chunks ``itxt`` (key, value)."""
    info = PngInfo()
    for key, value in texts:
        info.add_text(key, value)
    for key, value in itxt:
        info.add_itxt(key, value, zip=True)
    buffer = io.BytesIO()
    Image.fromarray(rgb).save(buffer, "PNG", pnginfo=info)
    return buffer.getvalue()


def certificate_chain(org: str):
    """(signer chain PEM, private key PEM, root PEM): an ES256 end-entity certificate for
    claim signing under a root CA, both made here."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    def name(common):
        return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common),
                          x509.NameAttribute(NameOID.ORGANIZATION_NAME, org)])  # fmt: skip

    def usage(sign, ca):
        return x509.KeyUsage(digital_signature=sign, content_commitment=False,
                             key_encipherment=False, data_encipherment=False, key_agreement=False,
                             key_cert_sign=ca, crl_sign=ca, encipher_only=False,
                             decipher_only=False)  # fmt: skip

    now = datetime.datetime.now(datetime.timezone.utc)
    root_key, key = ec.generate_private_key(ec.SECP256R1()), ec.generate_private_key(ec.SECP256R1())
    root = (
        x509.CertificateBuilder().subject_name(name(f"{org} Root")).issuer_name(name(f"{org} Root"))
        .public_key(root_key.public_key()).serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=3650))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(usage(False, True), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(root_key.public_key()), False)
        .sign(root_key, hashes.SHA256())
    )  # fmt: skip
    leaf = (
        x509.CertificateBuilder().subject_name(name(f"{org} Signer")).issuer_name(root.subject)
        .public_key(key.public_key()).serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=365))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(usage(True, False), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.EMAIL_PROTECTION]), False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(root_key.public_key()), False
        )
        .sign(root_key, hashes.SHA256())
    )  # fmt: skip
    pem = serialization.Encoding.PEM
    private = key.private_bytes(pem, serialization.PrivateFormat.PKCS8,
                                serialization.NoEncryption())  # fmt: skip
    return leaf.public_bytes(pem) + root.public_bytes(pem), private, root.public_bytes(pem).decode()


def c2pa_signed(data: bytes, mime: str, chain, key, agent="DALL-E", remote_url=None) -> bytes:
    import c2pa

    manifest = {
        "claim_generator_info": [{"name": "ChatGPT", "version": "1.0"}],
        "assertions": [{"label": "c2pa.actions", "data": {"actions": [{
            "action": "c2pa.created", "digitalSourceType": AI,
            "softwareAgent": {"name": agent}}]}}],
    }  # fmt: skip
    signer = c2pa.Signer.from_info(c2pa.C2paSignerInfo(c2pa.C2paSigningAlg.ES256, chain, key, None))
    builder = c2pa.Builder(manifest)
    if remote_url:
        builder.set_no_embed()
        builder.set_remote_url(remote_url)
    out = io.BytesIO()
    builder.sign(signer, mime, io.BytesIO(data), out)
    return out.getvalue()
