"""How each public suite names its revisions and how many tokens one step is (docs/suites.md
has the sources). A revision whose name the suite's pattern does not parse is not a
checkpoint of the training run (`main`, a pull request) and is left out."""

from __future__ import annotations

import re
from dataclasses import dataclass


@dataclass(frozen=True)
class Suite:
    name: str
    repos: str  # regex on the repository id
    revision: str  # regex on a branch name; group 1 is the step
    tokens_per_step: int | None  # the published batch in tokens; None: unknown (tokens then = step)

    def step(self, revision: str) -> int | None:
        match = re.fullmatch(self.revision, revision)
        return int(match.group(1)) if match else None


SUITES = [
    # 1024 sequences x 2048 tokens; branches step0, 1, 2, 4, ..., 512, 1000, ..., 143000
    Suite("Pythia / PolyPythias", r"EleutherAI/pythia-[^/]+", r"step(\d+)", 2_097_152),
    # 256 x 512 tokens per iteration; branches iter1, 2, 4, ..., 512, then every 400 (no iter0)
    Suite("delphi-suite", r"delphi-suite/[^/]+", r"iter_?(\d+)", 131_072),
    # Mistral's GPT-2 runs: 512 x 1024 tokens; branches checkpoint-0 ... checkpoint-400000
    Suite("Stanford CRFM (Mistral GPT-2)", r"stanford-crfm/[^/]+", r"checkpoint-(\d+)", 524_288),
    # SmolLM2 intermediate checkpoints: step-N (1.7B: 2,097,152 tokens per step; others unpublished here)
    Suite("SmolLM2 intermediate checkpoints", r"HuggingFaceTB/SmolLM2-1\.7B-intermediate-checkpoints",
          r"step-(\d+)", 2_097_152),
    Suite("SmolLM2 intermediate checkpoints", r"HuggingFaceTB/SmolLM2-[^/]+-intermediate-checkpoints",
          r"step-(\d+)", None),
]
ANY = Suite("any repository", r".*", r"(?:step|iter|checkpoint)[-_]?(\d+)", None)  # the common spellings


def suite_of(repo: str) -> Suite:
    return next((s for s in SUITES if re.fullmatch(s.repos, repo)), ANY)


def checkpoint_revisions(repo: str, branches: list[str]) -> dict[str, int]:
    """{revision: step} for the branches that name a training step, in step order."""
    suite = suite_of(repo)
    steps = {b: suite.step(b) for b in branches}
    return dict(sorted(((b, s) for b, s in steps.items() if s is not None), key=lambda item: item[1]))
