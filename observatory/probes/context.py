"""What the probes of one checkpoint share: input sets built once per run, and forward
passes run once per input set with every hook any selected probe asked for."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from observatory.metrics import Metric, mean_with_error
from train.model import GPT
from train.tokenizer import SPECIAL_TOKENS

PAD = SPECIAL_TOKENS.index("[PAD]")  # right padding never changes earlier positions of a causal model
BOS = SPECIAL_TOKENS.index("[BOS]")


@dataclass(eq=False)  # compared by identity: tensor fields have no single truth value
class Items:
    """Probe items as right-padded sequences prompt + answer, and where the answers are."""

    tokens: torch.Tensor  # (N, T) long
    tasks: list[str]  # (N,)
    splits: list[str]  # (N,) "heldout" or "train"
    prompt_len: torch.Tensor  # (N,)
    answer_len: torch.Tensor  # (N,)
    metadata: list[dict]
    answer_ids: list[list[int]]
    _answer_tokens: dict = field(default_factory=dict, repr=False)  # (task, split) -> answer_tokens(...)

    @classmethod
    def from_probe_items(cls, items: list[dict]) -> Items:
        seqs = [it["prompt_ids"] + it["answer_ids"] for it in items]
        tokens = torch.full((len(seqs), max(map(len, seqs), default=1)), PAD, dtype=torch.long)
        for i, seq in enumerate(seqs):
            tokens[i, : len(seq)] = torch.tensor(seq)
        return cls(tokens, [it["task"] for it in items], [it.get("split", "heldout") for it in items],
                   torch.tensor([len(it["prompt_ids"]) for it in items]),
                   torch.tensor([len(it["answer_ids"]) for it in items]), [it["metadata"] for it in items],
                   [it["answer_ids"] for it in items])

    def rows(self, task: str, split: str = "heldout") -> list[int]:
        return [i for i, (t, s) in enumerate(zip(self.tasks, self.splits)) if t == task and s == split]

    def answer_tokens(self, task: str, split: str = "heldout") -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(row, position, target) for every answer token of the task's items of one split:
        the logits at `position` of `row` predict `target`. Computed once per run (kept on
        the instance, so it goes when the run's items go)."""
        if (task, split) not in self._answer_tokens:
            r, p, t = [], [], []
            for i in self.rows(task, split):
                start = int(self.prompt_len[i]) - 1
                for k, target in enumerate(self.answer_ids[i]):
                    r.append(i), p.append(start + k), t.append(target)
            self._answer_tokens[task, split] = tuple(torch.tensor(x, dtype=torch.long) for x in (r, p, t))
        return self._answer_tokens[task, split]


def pack_blocks(items: list[dict], block_len: int, split: str = "heldout") -> tuple[torch.Tensor, list[str]]:
    """Each task's full examples of one split (held-out by default), concatenated and cut into
    blocks as training cuts them (block_len = n_ctx + 1: the model reads the first n_ctx
    tokens, each predicting the next)."""
    blocks, tasks, _ = pack_with_loss_mask(items, block_len, split)
    return blocks, tasks


def pack_with_loss_mask(items: list[dict], block_len: int, split: str = "heldout",
                        answer_only: bool = False) -> tuple[torch.Tensor, list[str], torch.Tensor]:
    """`pack_blocks` plus the training loss's mask (M, block_len - 1): whether the token after
    each read position is one training takes its loss on. Every token with `answer_only`
    false (data.loss_on=all); otherwise the answer tokens alone, and none before the block's
    first [BOS] (an answer whose prompt lies in another block), as train/data.py labels them."""
    items = [it for it in items if it.get("split", "heldout") == split]
    blocks, tasks, masks = [], [], []
    for task in dict.fromkeys(it["task"] for it in items):
        stream, answer = [], []
        for it in (it for it in items if it["task"] == task):
            stream += it["prompt_ids"] + it["answer_ids"] + it["suffix_ids"]
            answer += [False] * len(it["prompt_ids"]) + [True] * len(it["answer_ids"]) + [False] * len(it["suffix_ids"])
        for i in range(len(stream) // block_len):
            block, in_loss = stream[i * block_len : (i + 1) * block_len], answer[i * block_len : (i + 1) * block_len]
            if answer_only:
                first = block.index(BOS) if BOS in block else block_len
                in_loss = [j >= first and a for j, a in enumerate(in_loss)]
            else:
                in_loss = [True] * block_len
            blocks.append(block)
            tasks.append(task)
            masks.append(in_loss[1:])
    return (torch.tensor(blocks, dtype=torch.long).reshape(-1, block_len), tasks,
            torch.tensor(masks, dtype=torch.bool).reshape(-1, block_len - 1))


def documents(items: list[dict], length: int, fewest: int = 16) -> torch.Tensor:
    """Held-out text read from position 0, so that position t has read exactly t + 1 tokens, all
    of its own example, as in Olsson et al.'s in-context learning score (packed blocks mix
    positions within an example with positions in the block). A task's held-out examples at
    least `length` (n_ctx + 1) tokens long, each cut to `length` (shorter task items would not
    measure context use). A text run's documents cut into consecutive windows of `length`, each
    read from position 0, as a model reads the windows of a long document (Olsson et al.'s
    score is over positions in the context); with fewer than `fewest` windows, its `fewest`
    longest documents, cut to the shortest of them."""
    rows, text = [], []
    for it in items:
        if it.get("split", "heldout") != "heldout":
            continue
        seq = it["prompt_ids"] + it["answer_ids"] + it["suffix_ids"]
        if it["task"] is None:  # a text run's document
            text.append(seq)
            rows += [seq[i : i + length] for i in range(0, len(seq) - length + 1, length)]
        elif len(seq) >= length:
            rows.append(seq[:length])
    if len(rows) < fewest and len(text) >= fewest:
        longest = sorted(text, key=len, reverse=True)[:fewest]
        rows = [seq[: len(longest[-1])] for seq in longest]
    return torch.tensor(rows, dtype=torch.long).reshape(len(rows), -1 if rows else length)


MIN_REPEAT = 3  # a repeat of 2 puts the induction target at offset 1, where a previous-token head attends


@dataclass(frozen=True)
class Repeats:
    """Where each sequence's two copies lie in [BOS] filler r_1..r_L r_1..r_L filler."""

    start: torch.Tensor  # (S,) position of the first copy's r_1
    length: torch.Tensor  # (S,) L


def repeat_lengths(n_ctx: int) -> torch.Tensor:
    """The repeat lengths a context holds: MIN_REPEAT up to both copies after [BOS]."""
    longest = (n_ctx - 1) // 2
    return torch.arange(min(MIN_REPEAT, longest), longest + 1)


def repeat_layout(n_sequences: int, n_ctx: int, seed: int) -> Repeats:
    """The layout `repeated_random_tokens` draws with this seed: what the attention probe
    scores against. It does not depend on the vocabulary."""
    return _layout(n_sequences, n_ctx, torch.Generator().manual_seed(seed))


def _layout(n: int, n_ctx: int, g: torch.Generator) -> Repeats:
    """Every length of `repeat_lengths` used equally often (the n % K left over by distinct
    lengths), so that no one offset between copies is much commoner than 1/K; the filler
    split at random between before and after the copies, so that the copies' positions vary."""
    lengths = repeat_lengths(n_ctx)
    k = len(lengths)
    each = torch.cat([lengths.repeat(n // k), lengths[torch.randperm(k, generator=g)[: n % k]]])
    length = each[torch.randperm(n, generator=g)]
    spare = n_ctx - 1 - 2 * length  # (n,) filler tokens
    start = 1 + (torch.rand(n, generator=g) * (spare + 1)).long()  # 0..spare of them before the first copy
    return Repeats(start, length)


def repeated_random_tokens(n_sequences: int, n_ctx: int, vocab: list[int], bos: int, seed: int) -> torch.Tensor:
    """(n_sequences, n_ctx): [BOS] filler r_1..r_L r_1..r_L filler, each sequence with its own
    repeat length and position (`repeat_layout`): the second copy is predictable only by
    matching content, and no fixed offset finds it in most sequences."""
    g = torch.Generator().manual_seed(seed)
    repeats = _layout(n_sequences, n_ctx, g)
    pool = torch.tensor(vocab)
    return torch.stack([_repeated_sequence(int(start), int(length), n_ctx, pool, bos, g)
                        for start, length in zip(repeats.start, repeats.length)])


def _repeated_sequence(start: int, length: int, n_ctx: int, pool: torch.Tensor, bos: int,
                       g: torch.Generator) -> torch.Tensor:
    """One sequence (n_ctx,). The copy's tokens are distinct and the filler is drawn from the
    other tokens, where the vocabulary allows: then each token of the second copy has occurred
    once before, in the first copy, and where to look for what follows it is unambiguous."""
    shuffled = pool[torch.randperm(len(pool), generator=g)]
    if length <= len(pool):
        copy = shuffled[:length]
    else:
        copy = pool[torch.randint(len(pool), (length,), generator=g)]
    others = shuffled[length:] if length < len(pool) else pool
    filler = others[torch.randint(len(others), (n_ctx - 1 - 2 * length,), generator=g)]
    before = start - 1
    return torch.cat([torch.tensor([bos]), filler[:before], copy, copy, filler[before:]])


@dataclass
class ItemScores:
    """A metric as the weighted mean of per-item values: what the item bootstrap resamples."""

    items: list[int]
    values: list[float]
    weights: list[float]


def logprobs_at(logits: torch.Tensor, rows: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
    """Log-probabilities at the given (row, position) pairs only: (K, V). Every argmax the probes
    take goes through here, so that float32 ties break alike everywhere."""
    return logits[rows, positions].float().log_softmax(-1)


class Forward:
    def __init__(self, tokens: torch.Tensor, logits: torch.Tensor | None, cache: dict[str, torch.Tensor]):
        self.tokens, self.logits, self.cache = tokens, logits, cache  # (N, T), (N, T, V) or None, hook -> activations

    def logprobs(self, rows: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
        """Log-probabilities at the given (row, position) pairs only: (K, V)."""
        return logprobs_at(self.logits, rows, positions)


@dataclass
class Context:
    """One checkpoint's model plus the run's input sets; `forward(name)` runs once."""

    model: GPT
    inputs: dict[str, torch.Tensor]  # input set name -> tokens (N, T)
    hooks: dict[str, set[str]]  # input set name -> hook names requested by the probes
    batch_size: int = 256
    items: Items | None = None  # held-out and training-stream items (capability)
    linear_items: Items | None = None  # the linear probe's own items
    block_tasks: list[str] = field(default_factory=list)
    token_ids: dict[str, int] = field(default_factory=dict)  # the run's vocabulary
    targets: dict[str, torch.Tensor] = field(default_factory=dict)  # input set -> next token of each position (N, T)
    item_scores: dict[str, ItemScores] = field(default_factory=dict)  # metric -> per-item scores
    sampling_blocks: torch.Tensor | None = None  # (M, block_len): what the LLC samples on (runner.sampling_data)
    loss_masks: dict[str, torch.Tensor] = field(default_factory=dict)  # input set, "sampling_blocks" -> (N, T): in the loss
    ngrams: object | None = None  # the run's n-gram tables (observatory/probes/ngram.py: NgramTables)
    _forwards: dict[str, Forward] = field(default_factory=dict)

    @property
    def device(self) -> torch.device:
        """Where the model's weights are: its forward passes run there (a model without weights,
        a rule in a test, on the CPU)."""
        weights = self.model.parameters() if isinstance(self.model, torch.nn.Module) else iter(())
        first = next(weights, None)
        return first.device if first is not None else torch.device("cpu")

    def record_items(self, metric: str, items: torch.Tensor, values: torch.Tensor, weights: torch.Tensor,
                     **spec) -> Metric:
        """Keep a metric's per-item scores (item = row of probe_items.jsonl); returns the
        metric itself, their weighted mean with its standard error."""
        self.item_scores[metric] = ItemScores(items.tolist(), values.tolist(), weights.tolist())
        return mean_with_error(values.numpy(), weights.numpy(), **spec)

    @torch.no_grad()
    def forward(self, name: str, logits: bool = True) -> Forward:
        """The input set's forward pass with every hook asked for on it, run once; its logits
        kept unless `logits` is false (a probe that reads activations alone: at a 50k vocabulary
        the logits are 200 kB a token, the activations a few kB)."""
        cached = self._forwards.get(name)
        if cached is None or (logits and cached.logits is None):
            tokens, hooks = self.inputs[name], sorted(self.hooks.get(name, ()))
            outputs = {}  # "logits" and each hook -> (N, ...), filled batch by batch
            for start in range(0, len(tokens), self.batch_size):
                batch_tokens = tokens[start : start + self.batch_size].to(self.device)
                batch_logits, cache = self.model.run_with_cache(batch_tokens, names_filter=hooks)
                kept = {"logits": batch_logits, **cache} if logits else cache
                for key, batch in kept.items():
                    # allocated once at full size and filled in place: concatenating per-batch
                    # outputs takes a second full-size copy, and fresh memory is slow to touch on CPU.
                    # Kept in CPU memory: the model runs on its device, the probes read the results
                    if key not in outputs:
                        outputs[key] = torch.empty((len(tokens), *batch.shape[1:]), dtype=batch.dtype)
                    outputs[key][start : start + len(batch)] = batch.cpu()
            self._forwards[name] = Forward(tokens, outputs.pop("logits", None), outputs)
        return self._forwards[name]

    @torch.no_grad()
    def greedy_answers(self, rows: torch.Tensor) -> torch.Tensor:
        """Items `rows`' tokens (len(rows), L: their longest prompt + answer) with every answer
        token replaced by what greedy decoding writes there: the argmax given the prompt and the
        answer tokens generated before it, as many as the answer has. While an item's generated
        prefix equals its answer, the teacher-forced forward pass already holds the next
        prediction; only items that have gone wrong are run again, on their own prefix."""
        items = self.items
        prompt_len, answer_len = items.prompt_len[rows], items.answer_len[rows]
        tokens = self.inputs["items"][rows, : int((prompt_len + answer_len).max())]
        teacher_forced = self.forward("items")
        generated = tokens.clone()
        for k in range(int(answer_len.max())):
            with_token_k = (answer_len > k).nonzero().squeeze(1)
            at = prompt_len[with_token_k] - 1 + k  # the position that predicts answer token k
            prediction = teacher_forced.logprobs(rows[with_token_k], at).argmax(-1)
            gone_wrong = (generated[with_token_k] != tokens[with_token_k]).any(1)  # only answer tokens < k differ yet
            if gone_wrong.any():
                prediction[gone_wrong] = self._argmax_at(generated[with_token_k[gone_wrong]], at[gone_wrong])
            generated[with_token_k, at + 1] = prediction
        return generated

    def _argmax_at(self, tokens: torch.Tensor, at: torch.Tensor) -> torch.Tensor:
        """The model's argmax at position at[i] of each sequence (B,). Causal: the tokens after
        at[i] (the answer not yet generated) are read but change nothing there."""
        out = torch.empty(len(tokens), dtype=torch.long)
        for start in range(0, len(tokens), self.batch_size):
            logits = self.model(tokens[start : start + self.batch_size].to(self.device)).cpu()  # (B, L, V)
            batch_at = at[start : start + len(logits)]
            out[start : start + len(logits)] = logprobs_at(logits, torch.arange(len(logits)), batch_at).argmax(-1)
        return out
