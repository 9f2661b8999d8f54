"""C2PA (Content Credentials) with the Content Authenticity Initiative's ``c2pa-python``: the
active manifest's claim generator, the actions whose ``digitalSourceType`` is
``trainedAlgorithmicMedia`` or ``compositeWithTrainedAlgorithmicMedia`` (with the software agent
named), the signer, and the validation state:

* ``valid, trusted``: the signature verifies and the signer chains to a trust anchor given with
  ``--c2pa_trust``;
* ``valid, untrusted``: the signature verifies, the signer is not (or cannot be) trusted —
  without trust anchors a valid signature is never "trusted";
* ``invalid: hash mismatch``: the pixels (or other bound data) changed after signing;
* ``invalid signature``: the claim, its signature or the signing credential does not verify.

Remote manifests and OCSP responses are never fetched: a URL inside a file does not make clipdet
reach the network.
"""

import io
import json
from dataclasses import dataclass

TRAINED = "trainedAlgorithmicMedia"
COMPOSITE = "compositeWithTrainedAlgorithmicMedia"
MIME_TYPES = {"jpeg": "image/jpeg", "png": "image/png", "webp": "image/webp",
              "mp4": "video/mp4", "mov": "video/quicktime"}  # fmt: skip
_HASH_MISMATCH = ("dataHash.mismatch", "boxesHash.mismatch", "bmffHash.mismatch")
# the claim, an assertion or the credential no longer matches what was signed
_SIGNATURE_FAILURES = ("claimSignature.", "hashedURI.mismatch", "signingCredential.invalid",
                       "signingCredential.revoked", "timeStamp.mismatch")  # fmt: skip
UNTRUSTED = "signingCredential.untrusted"
_OFFLINE = {"verify": {"remote_manifest_fetch": False, "ocsp_fetch": False}}


@dataclass(frozen=True)
class C2paFinding:
    value: str  # the AI source type stated, or "manifest" when none is
    state: str  # "valid, trusted", "valid, untrusted", "invalid: hash mismatch", ...
    signer: str  # the signing certificate's organisation (or common name)
    generator: str  # the software agent or claim generator named

    @property
    def token_value(self) -> str:
        details = "; ".join(filter(None, [self.state, self.signer]))
        return f"{self.value}({details})"


class C2paReader:
    """Reads manifests offline; ``trust_pem``: PEM trust anchors (a file's text), or None."""

    def __init__(self, trust_pem: str | None = None):
        self.trust_pem = trust_pem
        self._context = None

    def context(self):
        if self._context is None:
            import c2pa

            settings = json.loads(json.dumps(_OFFLINE))
            if self.trust_pem:
                settings["trust"] = {"trust_anchors": self.trust_pem}
                settings["verify"]["verify_trust"] = True
            self._context = c2pa.Context.from_dict(settings)
        return self._context

    def __getstate__(self):  # the native context stays in the process that made it
        return {"trust_pem": self.trust_pem, "_context": None}

    def read(self, data: bytes, fmt: str) -> C2paFinding | None:
        """None when the file has no manifest; ValueError when it has one that cannot be read
        (truncated, forged beyond parsing, a remote manifest not fetched)."""

        mime = MIME_TYPES.get(fmt)
        if mime is None or b"c2pa" not in data:  # no JUMBF manifest store in the file
            return None
        return self.read_stream(io.BytesIO(data), mime)

    def read_stream(self, stream, mime: str) -> C2paFinding | None:
        """The manifest of an open file (a video is read where it lies, not into memory);
        None when it has none, ValueError when it cannot be read."""
        import c2pa

        try:
            with c2pa.Reader(mime, stream, context=self.context()) as reader:
                store = json.loads(reader.json())
        except c2pa.C2paError as e:
            if "ManifestNotFound" in type(e).__name__ or "no JUMBF" in str(e):
                return None
            reason = "remote manifest not fetched" if "remote" in str(e).lower() else str(e)
            raise ValueError(reason.splitlines()[0][:120]) from e
        return _finding(store)


def _finding(store: dict) -> C2paFinding | None:
    manifest = store.get("manifests", {}).get(store.get("active_manifest", ""))
    if not manifest:
        return None
    sources, agents = [], []
    for assertion in manifest.get("assertions", []):
        if not str(assertion.get("label", "")).startswith("c2pa.actions"):
            continue
        for action in assertion.get("data", {}).get("actions", []):
            source = str(action.get("digitalSourceType", "")).rstrip("/").rsplit("/", 1)[-1]
            if source in (TRAINED, COMPOSITE):
                sources.append(source)
                agent = action.get("softwareAgent")
                agents.append(agent.get("name", "") if isinstance(agent, dict) else str(agent))
    claim = manifest.get("claim_generator_info") or []
    claim_name = claim[0].get("name", "") if claim and isinstance(claim[0], dict) else ""
    claim_name = claim_name or str(manifest.get("claim_generator", "")).split("/")[0]
    signature = manifest.get("signature_info", {})
    signer = signature.get("issuer") or signature.get("common_name") or ""
    return C2paFinding(
        value=sources[0] if sources else "manifest",
        state=_state(store),
        signer=signer,
        generator=next((a for a in agents if a), "") or (claim_name if sources else ""),
    )


def _state(store: dict) -> str:
    results = store.get("validation_results", {}).get("activeManifest", {})
    failures = [str(status.get("code", "")) for status in results.get("failure", [])]
    if any(mark in code for code in failures for mark in _HASH_MISMATCH):
        return "invalid: hash mismatch"
    if any(mark in code for code in failures for mark in _SIGNATURE_FAILURES):
        return "invalid signature"
    state = str(store.get("validation_state", ""))
    if state == "Trusted":
        return "valid, trusted"
    if state == "Valid":
        return "valid, untrusted"
    other = [code for code in failures if code != UNTRUSTED]
    return f"invalid: {other[0]}" if other else (state.lower() or "not validated")
