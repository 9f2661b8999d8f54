"""The ``provenance`` column's text: tokens ``kind:value`` joined by ``; ``."""


def split_tokens(text: str) -> list[str]:
    """The tokens of a ``provenance`` cell: split on ``; `` outside parentheses (a C2PA
    token's details hold ``; `` themselves)."""
    tokens, depth, start = [], 0, 0
    for i, char in enumerate(text):
        depth += (char == "(") - (char == ")")
        if depth == 0 and text.startswith("; ", i):
            tokens.append(text[start:i])
            start = i + 2
    tokens.append(text[start:])
    return [token for token in tokens if token]
