"""A toy probabilistic grammar with subject-verb number agreement across attractors."""

from __future__ import annotations

import random

from train.tasks.base import Item, Task

NOUNS = ["dog", "cat", "bird", "horse", "farmer", "teacher"]  # plural: + "s"
ADJECTIVES = ["small", "old", "happy", "red"]
PREPOSITIONS = ["near", "behind", "with"]
INTRANSITIVE = ["run", "sleep", "sing", "wait"]  # singular: + "s"
TRANSITIVE = ["see", "like", "follow"]


def noun(lemma: str, plural: bool) -> str:
    return lemma + "s" if plural else lemma


def verb(lemma: str, plural: bool) -> str:
    return lemma if plural else lemma + "s"


class Grammar(Task):
    """Sentences `the (adj) noun [near the (adj) noun | that the noun verb] verb [the noun] .`
    The prompt ends at the main verb, the answer is the verb in the subject's number, and
    `metadata.wrong` is the same verb in the other number: agreement accuracy compares the
    two. An attractor is an intervening noun of the other number (Linzen et al. 2016).
    Items are split by prompt, so no held-out subject phrase is ever trained on."""

    name, marker = "grammar", "[lm]"

    def __init__(self, p_adjective: float = 0.3, p_prepositional: float = 0.4, p_relative: float = 0.2,
                 p_object: float = 0.5, held_out: float = 0.1):
        super().__init__(held_out)
        self.p_adjective, self.p_prepositional = p_adjective, p_prepositional
        self.p_relative, self.p_object = p_relative, p_object

    def symbols(self) -> list[str]:
        words = ["the", "that", "."] + ADJECTIVES + PREPOSITIONS
        words += [noun(n, pl) for n in NOUNS for pl in (False, True)]
        words += [verb(v, pl) for v in INTRANSITIVE + TRANSITIVE for pl in (False, True)]
        return [self.marker] + words

    def _noun_phrase(self, rng: random.Random, plural: bool) -> list[str]:
        adjective = [rng.choice(ADJECTIVES)] if rng.random() < self.p_adjective else []
        return ["the", *adjective, noun(rng.choice(NOUNS), plural)]

    def sample(self, rng: random.Random) -> Item:
        plural = rng.random() < 0.5
        subject = self._noun_phrase(rng, plural)
        attractor_plural = None
        r = rng.random()
        if r < self.p_prepositional:
            attractor_plural = rng.random() < 0.5
            subject += [rng.choice(PREPOSITIONS), *self._noun_phrase(rng, attractor_plural)]
        elif r < self.p_prepositional + self.p_relative:
            attractor_plural = rng.random() < 0.5
            subject += ["that", *self._noun_phrase(rng, attractor_plural), verb(rng.choice(TRANSITIVE), attractor_plural)]
        transitive = rng.random() < self.p_object
        lemma = rng.choice(TRANSITIVE if transitive else INTRANSITIVE)
        suffix = " ".join(self._noun_phrase(rng, rng.random() < 0.5)) + " ." if transitive else "."
        return self.item(" ".join(subject), verb(lemma, plural), suffix, wrong=verb(lemma, not plural),
                         plural=plural, attractor=attractor_plural is not None and attractor_plural != plural)
