"""IPTC provenance in XMP: ``Iptc4xmpExt:DigitalSourceType`` (e.g. ``trainedAlgorithmicMedia``,
which OpenAI, Google, Adobe and others write into generated images) and the 2025 IPTC fields
naming the AI system (``Iptc4xmpExt:AISystemUsed``, ``AISystemVersionUsed``).

Packets are parsed with defusedxml: a DTD, an entity declaration or an external reference makes
the packet unreadable instead of being expanded or fetched. Never a regular expression over the
bytes.
"""

from dataclasses import dataclass

IPTC_EXT = "http://iptc.org/std/Iptc4xmpExt/2008-02-29/"
RDF = "http://www.w3.org/1999/02/22-rdf-syntax-ns#"
SOURCE_TYPE = f"{{{IPTC_EXT}}}DigitalSourceType"
AI_SYSTEM = f"{{{IPTC_EXT}}}AISystemUsed"
AI_VERSION = f"{{{IPTC_EXT}}}AISystemVersionUsed"


class UnreadableXMP(ValueError):
    """An XMP packet that is not well-formed XML, or that declares a DTD or entities."""


@dataclass(frozen=True)
class IptcSource:
    source_type: str  # the code at the end of the IPTC URI, e.g. trainedAlgorithmicMedia
    ai_system: str = ""  # AISystemUsed (+ version), when stated


def read_iptc(packet: bytes) -> list[IptcSource]:
    """The digital source types a packet states, with the AI system when named."""
    from defusedxml import DefusedXmlException
    from defusedxml.ElementTree import ParseError, fromstring

    try:
        root = fromstring(packet, forbid_dtd=True, forbid_entities=True, forbid_external=True)
    except (DefusedXmlException, ParseError, ValueError) as e:
        raise UnreadableXMP(f"{type(e).__name__}: {e}") from e
    types, systems, versions = [], [], []
    for element in root.iter():
        for attribute, value in element.attrib.items():  # rdf:Description attributes
            _collect(attribute, value, types, systems, versions)
        text = _value(element)
        if text:
            _collect(element.tag, text, types, systems, versions)
    system = " ".join(filter(None, [_first(systems), _first(versions)]))
    return [IptcSource(t, system) for t in dict.fromkeys(types)]


def _value(element) -> str:
    """An element's value: its text, an rdf:resource URI, or the first text inside it (an
    rdf:Alt, Seq or Bag item)."""
    text = (element.text or "").strip() or element.attrib.get(f"{{{RDF}}}resource", "").strip()
    if text or element.tag not in (SOURCE_TYPE, AI_SYSTEM, AI_VERSION):
        return text
    return next((t.text.strip() for t in element.iter() if (t.text or "").strip()), "")


def _collect(tag: str, value: str, types: list, systems: list, versions: list) -> None:
    if tag == SOURCE_TYPE:
        types.append(value.rstrip("/").rsplit("/", 1)[-1])
    elif tag == AI_SYSTEM:
        systems.append(value)
    elif tag == AI_VERSION:
        versions.append(value)


def _first(values: list[str]) -> str:
    return values[0] if values else ""
