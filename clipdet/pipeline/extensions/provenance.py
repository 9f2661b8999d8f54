"""--provenance: the evidence generators and signers write into a file (C2PA manifests, IPTC,
generator parameters, invisible watermarks), as two text columns: the evidence tokens and the
generator they name. LLRs do not change."""

from pathlib import Path

from clipdet.constants import PROVENANCE_COLUMN, PROVENANCE_COLUMNS, PROVENANCE_GENERATOR_COLUMN
from clipdet.pipeline.columns import PROVENANCE, Column
from clipdet.pipeline.extensions.base import FileSource, RowExtension, VideoSource

NONE_FOUND = ("", "")


class ProvenanceEvidence(RowExtension):
    """Each row's value: (evidence tokens, generator). ``reader``: a
    ``clipdet.provenance.ProvenanceReader`` (None: an instance that only reads stored values)."""

    name = "provenance"
    reads_bytes = True
    reads_pixels = True  # the watermarks are read from the decoded pixels

    def __init__(self, reader=None):
        self.reader = reader

    @classmethod
    def from_options(cls, options, paths=None):
        if not options.provenance:
            return None
        from clipdet.provenance import ProvenanceReader

        trust = Path(options.c2pa_trust).read_text() if options.c2pa_trust else None
        return cls(ProvenanceReader(trust))

    def signature(self) -> dict:
        return {"provenance": True}  # rows of a run without it lack the evidence

    def columns(self) -> tuple[Column, ...]:
        return tuple(Column(name, PROVENANCE) for name in PROVENANCE_COLUMNS)

    def prepare_image(self, source: FileSource) -> tuple[str, str]:
        found = self.reader.read(source.data, source.pixels)
        return found.text, found.generator

    def prepare_failed(self, source: FileSource) -> tuple[str, str] | None:
        """The evidence of a file whose pixels cannot be decoded (its metadata may still say
        which generator made it)."""
        if source.data is None:
            return None
        try:
            found = self.reader.read(source.data, None)
        except Exception:  # noqa: BLE001 -- the row already carries its error
            return None
        return found.text, found.generator

    def prepare_video(self, source: VideoSource) -> tuple[str, str]:
        found = self.reader.read_video(source.path, source.data, source.tags)
        return found.text, found.generator

    def table_columns(self, values: dict, n_rows: int, fusion=None) -> dict:
        rows = [values.get(i) or NONE_FOUND for i in range(n_rows)]
        return {
            PROVENANCE_COLUMN: [tokens for tokens, _ in rows],
            PROVENANCE_GENERATOR_COLUMN: [generator for _, generator in rows],
        }

    def to_json(self, value: tuple[str, str]) -> list:
        return list(value)

    def from_json(self, stored, n_detectors: int) -> tuple[str, str]:
        return str(stored[0]), str(stored[1])
