r"""The language-model task's corpus: made here, from a small grammar, so that it is free of any license.

The text has structure a character model can learn in a minute on a CPU (spelling, word order,
agreement, punctuation, line breaks) and enough variety that it does not memorise it. The
template ships its output; ``test_lm_corpus.py`` checks the shipped file is exactly what this
makes, so anyone can see where it came from and remake it:

    .venv/bin/python tests/template/corpus.py \
        > "template/src/{{package_name}}/{% if task == 'language_model' %}corpus.txt{% endif %}"
"""

from __future__ import annotations

import random

NAMES = ["Ada", "Ben", "Cleo", "Dev", "Eli", "Fay", "Gus", "Hana", "Ivo", "June", "Kai", "Lena", "Milo", "Nora"]
ANIMALS = ["cat", "dog", "fox", "owl", "hen", "goat", "crow", "mole", "duck", "hare"]
PLACES = ["the river", "the old mill", "the market", "the hill", "the forest", "the harbour", "the garden"]
THINGS = ["apple", "lantern", "map", "kettle", "rope", "letter", "basket", "ember", "oar", "umbrella"]
ADJECTIVES = ["small", "quiet", "bright", "old", "quick", "muddy", "kind", "tired", "clever", "brave"]
VERBS = [("walks", "walked"), ("runs", "ran"), ("looks", "looked"), ("waits", "waited"), ("sings", "sang")]
TIMES = ["In the morning", "At noon", "Before dawn", "After the rain", "Late at night", "On Sunday"]


def article(word: str) -> str:
    return "an" if word[0] in "aeiou" else "a"


def sentence(rng: random.Random) -> str:
    """One sentence from one of a few patterns."""
    name, other = rng.sample(NAMES, 2)
    animal, thing, adjective = rng.choice(ANIMALS), rng.choice(THINGS), rng.choice(ADJECTIVES)
    present, past = rng.choice(VERBS)
    place = rng.choice(PLACES)
    pattern = rng.randrange(6)
    if pattern == 0:
        return f"{rng.choice(TIMES)}, {name} {past} to {place} with {article(adjective)} {adjective} {animal}."
    if pattern == 1:
        return f"{name} gives {other} {article(thing)} {thing}, and {other} says thank you."
    if pattern == 2:
        return f"The {adjective} {animal} {present} near {place} while {name} watches."
    if pattern == 3:
        count = rng.randint(2, 9)
        return f"{name} counts {count} {thing}s: " + ", ".join(str(i) for i in range(1, count + 1)) + "."
    if pattern == 4:
        return f'"Where is my {thing}?" asks {name}. "By {place}," says {other}.'
    return f"{other} and {name} {past} home, and the {animal} {past} after them."


def corpus(num_chars: int = 120_000, seed: int = 0) -> str:
    """Paragraphs of 2 to 5 sentences, separated by blank lines, until ``num_chars`` characters."""
    rng = random.Random(seed)
    paragraphs, size = [], 0
    while size < num_chars:
        paragraph = " ".join(sentence(rng) for _ in range(rng.randint(2, 5)))
        paragraphs.append(paragraph)
        size += len(paragraph) + 2
    return "\n\n".join(paragraphs) + "\n"


if __name__ == "__main__":
    print(corpus(), end="")
