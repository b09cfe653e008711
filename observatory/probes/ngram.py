"""How close the model's predictions are to n-gram statistics (Belrose et al. 2024, "Neural
networks learn statistics of increasing complexity"; Edelman et al. 2024, in-context n-grams).

- `kl/n`: KL(p_n ‖ p_model) at held-out positions, p_n the corpus's n-gram predictive
  distribution counted on the run's own training stream (every block training reads, as often
  as it reads it: observatory/sweep/ngram_tables.py), p_model the model's next-token
  distribution. Belrose et al. (EleutherAI/features-across-time) also put the n-gram model
  first, KL(n-gram ‖ model): it asks how much of the n-gram model's probability the network
  misses, and it is finite without smoothing the n-gram side (the network's softmax is never
  0; p_n log p_n is 0 where p_n is). So p_n is the unsmoothed maximum-likelihood estimate, and
  a context never seen in training backs off to the next lower order (to the unigram at worst),
  as a "stupid backoff" model would, unnormalised mixing aside. Held-out positions: up to
  `max_positions` of the held-out blocks, at least max_order - 1 tokens into their block (every
  order has its whole context there), drawn once per run; the standard error is over blocks.
- `loss_sampled/n`: the model's loss on sequences sampled from the n-gram model (Belrose et
  al.'s second measure): the first token from the unigram, each next one from p_n given the
  tokens before it (backing off as above).
- `icl_kl/n` (n = 1, 2): KL(q_n ‖ p_model) on held-out documents read from position 0, q_n
  counted from the document's own tokens so far (Edelman et al.): q_1 the frequencies of the
  tokens read, q_2 the tokens that followed earlier occurrences of the current token. At the
  positions from the ICL score's early position on (too few tokens before it for an estimate)
  where q_n exists (q_2: the current token occurred before); the standard error is over documents.

All are U-shaped over training where the model passes through the statistics and beyond them:
the report marks each curve's minimum (observatory/analysis/tables.py: ngram_minima).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from observatory.metrics import NGRAM, Metric, mean_with_error
from observatory.probes.loss import icl_positions, per_token_loss
from observatory.probes.registry import probe

MAX_KEY = 2**62  # n-gram keys are base-V integers in int64


@dataclass(frozen=True)
class Settings:
    max_order: int  # kl/1 .. kl/max_order
    sampled_orders: list[int]  # loss_sampled/n
    icl_orders: list[int]  # icl_kl/n, n in (1, 2)
    n_sampled: int  # sequences sampled from each n-gram model
    max_positions: int  # held-out positions that kl/n averages over
    seed: int  # draws the positions and the samples, once per run

    def __post_init__(self):
        if self.max_order < 1:
            raise ValueError(f"probes.ngram.max_order={self.max_order}: the orders start at 1 (the unigram)")
        if not set(self.sampled_orders) <= set(range(1, self.max_order + 1)):
            raise ValueError(f"probes.ngram.sampled_orders={self.sampled_orders}: each must be 1..max_order "
                             f"({self.max_order})")
        if not set(self.icl_orders) <= {1, 2}:
            raise ValueError(f"probes.ngram.icl_orders={self.icl_orders}: in-context estimates exist for 1 and 2")


# ---- the tables ------------------------------------------------------------------------
@dataclass
class NgramTables:
    """Counts of every n-gram up to max_order in the training stream, per order n as a sorted
    table of contexts (the n - 1 tokens before, as a base-V integer; the unigram's one context
    is 0) and, per context, the tokens that followed it and how often."""

    vocab_size: int
    contexts: dict[int, torch.Tensor]  # n -> (C,) sorted context keys
    starts: dict[int, torch.Tensor]  # n -> (C + 1,) where each context's entries start
    tokens: dict[int, torch.Tensor]  # n -> (E,) the next token of each entry
    counts: dict[int, torch.Tensor]  # n -> (E,) float64, how often

    @property
    def max_order(self) -> int:
        return max(self.contexts)

    @classmethod
    def count(cls, blocks: torch.Tensor, reads: torch.Tensor, vocab_size: int, max_order: int) -> NgramTables:
        """Every n-gram within each block (M, L) (the model never reads across blocks), each
        counted `reads[m]` times: how often training read block m."""
        check_vocab(vocab_size, max_order)
        blocks, tables = blocks.long(), cls(vocab_size, {}, {}, {}, {})
        for n in range(1, max_order + 1):
            windows = blocks.unfold(1, n, 1)  # (M, L - n + 1, n)
            keys = (windows * vocab_size ** torch.arange(n - 1, -1, -1)).sum(-1)  # base-V, first token most significant
            weights = reads.double()[:, None].expand_as(keys)
            unique, inverse = torch.unique(keys.flatten(), return_inverse=True)  # sorted
            counts = torch.zeros(len(unique), dtype=torch.float64).index_add_(0, inverse, weights.flatten())
            keep = counts > 0  # blocks training never read
            unique, counts = unique[keep], counts[keep]
            contexts, per_context = torch.unique_consecutive(unique // vocab_size, return_counts=True)
            tables.contexts[n], tables.tokens[n], tables.counts[n] = contexts, unique % vocab_size, counts
            tables.starts[n] = torch.cat([torch.zeros(1, dtype=torch.long), per_context.cumsum(0)])
        return tables

    def to_tensors(self) -> dict[str, torch.Tensor]:
        out = {"vocab_size": torch.tensor(self.vocab_size)}
        for n in self.contexts:
            out |= {f"{part}/{n}": getattr(self, part)[n] for part in ("contexts", "starts", "tokens", "counts")}
        return out

    @classmethod
    def from_tensors(cls, tensors: dict[str, torch.Tensor]) -> NgramTables:
        orders = sorted({int(k.split("/")[1]) for k in tensors if "/" in k})
        parts = {part: {n: tensors[f"{part}/{n}"] for n in orders} for part in ("contexts", "starts", "tokens", "counts")}
        return cls(int(tensors["vocab_size"]), **parts)

    def context_keys(self, history: torch.Tensor, n: int) -> torch.Tensor:
        """(K,) the order-n context keys of histories (K, >= n - 1): their last n - 1 tokens."""
        if n == 1:
            return torch.zeros(len(history), dtype=torch.long)
        last = history[:, history.shape[1] - (n - 1):].long()
        return (last * self.vocab_size ** torch.arange(n - 2, -1, -1)).sum(-1)

    def predictive(self, history: torch.Tensor, n: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """p_n(· | history) for histories (K, >= n - 1) as entries (position k, token, probability),
        a context never seen backing off to the highest lower order that saw it."""
        order = torch.full((len(history),), 1, dtype=torch.long)  # the order each position is answered at
        index = torch.zeros(len(history), dtype=torch.long)  # its context's row in that order's table
        for m in range(2, n + 1):
            keys = self.context_keys(history, m)
            found_at = torch.searchsorted(self.contexts[m], keys).clamp(max=len(self.contexts[m]) - 1)
            seen = self.contexts[m][found_at] == keys
            order[seen], index[seen] = m, found_at[seen]
        ks, toks, probs = [], [], []
        for m in order.unique().tolist():
            k = (order == m).nonzero().squeeze(1)
            start, end = self.starts[m][index[k]], self.starts[m][index[k] + 1]
            lengths = end - start
            entry_k = k.repeat_interleave(lengths)
            entry = start.repeat_interleave(lengths) + torch.arange(int(lengths.sum())) - \
                (lengths.cumsum(0) - lengths).repeat_interleave(lengths)
            total = torch.zeros(len(history), dtype=torch.float64).index_add_(0, entry_k, self.counts[m][entry])
            ks.append(entry_k), toks.append(self.tokens[m][entry]), probs.append(self.counts[m][entry] / total[entry_k])
        return torch.cat(ks), torch.cat(toks), torch.cat(probs)

    def sample(self, n: int, n_sequences: int, length: int, generator: torch.Generator) -> torch.Tensor:
        """(S, length) sequences from the order-n model: the first token from the unigram, each
        next one from p_n given the tokens before it."""
        out = torch.zeros(n_sequences, length, dtype=torch.long)
        for t in range(length):
            k, toks, probs = self.predictive(out[:, max(0, t - (n - 1)): t], min(n, t + 1))
            dense = torch.zeros(n_sequences, self.vocab_size, dtype=torch.float64).index_put_((k, toks), probs)
            out[:, t] = torch.multinomial(dense, 1, generator=generator).squeeze(1)
        return out


def check_vocab(vocab_size: int, max_order: int) -> None:
    if vocab_size ** max_order >= MAX_KEY:
        raise ValueError(f"probes.ngram.max_order={max_order}: a vocabulary of {vocab_size} tokens has "
                         f"{vocab_size}^{max_order} n-grams, more than the exact counts' 64-bit keys hold; "
                         "lower max_order")


def kl_to_model(p_entries: tuple[torch.Tensor, torch.Tensor, torch.Tensor], logq: torch.Tensor) -> torch.Tensor:
    """KL(p ‖ q) per position (K,): p as entries (position, token, probability), q as
    log-probabilities (K, V). Entries with p = 0 contribute nothing."""
    k, toks, p = p_entries
    terms = p * (p.log() - logq[k, toks].double())
    return torch.zeros(len(logq), dtype=torch.float64).index_add_(0, k, terms)


# ---- in-context estimates ------------------------------------------------------------------
def icl_kl(tokens: torch.Tensor, logits: torch.Tensor, order: int) -> tuple[torch.Tensor, torch.Tensor]:
    """KL(q_order ‖ model) at every position of documents (D, T) given the model's logits there
    (D, T, V), with q counted from the document's tokens 0..t; and where q exists (D, T).
    Pairwise (D, T, T) tables: j indexes the earlier token. Log-probabilities are taken only
    where q has mass (no second (D, T, V) tensor)."""
    D, T = tokens.shape
    same = tokens[:, :, None] == tokens[:, None, :]  # (D, T, T): x_i == x_j
    upto = torch.ones(T, T, dtype=torch.bool).tril()  # j <= t
    if order == 1:  # q_1(w) = #{j <= t: x_j = w} / (t + 1), each j weighted 1 / (t + 1)
        weight = upto.expand(D, T, T).double()  # (D, t, j)
        successor = tokens[:, None, :].expand(D, T, T)  # the token j contributes: x_j
        q_of = (same.double() @ upto.double().T).transpose(1, 2)  # (D, t, j): #{i <= t: x_i = x_j}
    else:  # q_2(w) = #{j < t: x_j = x_t, x_{j+1} = w} / #{j < t: x_j = x_t}
        weight = (same & upto.tril(-1)).double()  # (D, t, j): j < t, x_j = x_t
        nxt = torch.cat([tokens[:, 1:], tokens[:, -1:]], dim=1)  # x_{j+1} (the last j is never used: j < t <= T-1)
        successor = nxt[:, None, :].expand(D, T, T)
        same_next = (nxt[:, :, None] == nxt[:, None, :]).double()  # (D, j, i): x_{j+1} == x_{i+1}
        q_of = weight @ same_next  # (D, t, j): #{i < t: x_i = x_t, x_{i+1} = x_{j+1}}
    n = weight.sum(-1)  # (D, T) tokens the estimate counts
    exists = n > 0
    norm = n.clamp(min=1)[..., None]
    q = (q_of / norm).clamp(min=1e-300)
    log_norm = logits.float().logsumexp(-1).double()  # (D, T)
    cross = logits.gather(2, successor).double() - log_norm[..., None]  # (D, t, j): log p_model_t(token j contributes)
    kl = (weight * (q.log() - cross)).sum(-1) / norm.squeeze(-1)
    return kl, exists


# ---- the probe ---------------------------------------------------------------------------
def _positions(n_rows: int, length: int, first: int, max_positions: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    rows, cols = torch.meshgrid(torch.arange(n_rows), torch.arange(first, length), indexing="ij")
    rows, cols = rows.flatten(), cols.flatten()
    if len(rows) > max_positions:
        pick = torch.randperm(len(rows), generator=torch.Generator().manual_seed(seed))[:max_positions].sort().values
        rows, cols = rows[pick], cols[pick]
    return rows, cols


def _kl_metrics(ctx, tables: NgramTables, settings: Settings) -> dict[str, Metric]:
    blocks = ctx.inputs.get("blocks")
    if blocks is None or not len(blocks) or blocks.shape[1] < settings.max_order:
        return {}
    rows, cols = _positions(len(blocks), blocks.shape[1], settings.max_order - 1, settings.max_positions, settings.seed)
    logq = ctx.forward("blocks").logprobs(rows, cols)  # (K, V)
    history = torch.stack([blocks[rows, cols - d] for d in range(settings.max_order - 2, -1, -1)], dim=1) \
        if settings.max_order > 1 else torch.zeros(len(rows), 0, dtype=torch.long)  # (K, max_order - 1), ends at cols
    metrics = {}
    for n in range(1, settings.max_order + 1):
        kl = kl_to_model(tables.predictive(history, n), logq)
        per_block = torch.zeros(len(blocks), dtype=torch.float64).index_add_(0, rows, kl)
        count = torch.bincount(rows, minlength=len(blocks)).double()
        used = count > 0
        metrics[f"kl/{n}"] = mean_with_error((per_block[used] / count[used]).numpy(), count[used].numpy(),
                                             **_spec(f"KL to the {_name(n)} statistics", primary=n == 2))
    return metrics


def _sampled_losses(ctx, settings: Settings) -> dict[str, Metric]:
    metrics = {}
    for n in settings.sampled_orders:
        name = f"sampled/{n}"
        loss = per_token_loss(ctx.forward(name), ctx.targets[name])  # (S, T)
        metrics[f"loss_sampled/{n}"] = mean_with_error(loss.mean(1).numpy(),
                                                       **_spec(f"loss on {_name(n)} samples", unit="nats per token"))
    return metrics


def _icl_metrics(ctx, settings: Settings) -> dict[str, Metric]:
    docs = ctx.inputs.get("documents")
    if docs is None or not len(docs):
        return {}
    logits = ctx.forward("documents").logits  # (D, T, V)
    early, _ = icl_positions(docs.shape[1])
    metrics = {}
    for n in settings.icl_orders:
        kl, exists = icl_kl(docs, logits, n)
        exists[:, :early] = False
        per_doc, count = (kl * exists).sum(1), exists.sum(1).double()
        used = count > 0
        if used.any():
            metrics[f"icl_kl/{n}"] = mean_with_error((per_doc[used] / count[used]).numpy(), count[used].numpy(),
                                                     **_spec(f"KL to the document's own {_name(n)} statistics"))
    return metrics


def _name(n: int) -> str:
    return {1: "unigram", 2: "bigram", 3: "trigram"}.get(n, f"{n}-gram")


def _spec(label: str, unit: str = "nats", primary: bool = False) -> dict:
    return dict(kind="loss", higher_is_better=False, low=0.0, role=NGRAM, label=label, unit=unit, split="heldout",
                primary=primary)


@probe("ngram", version=2, settings=Settings)  # 2: a text run's documents in windows
def ngram(ctx, settings: Settings) -> dict:
    if ctx.ngrams is None:
        raise ValueError("the ngram probe needs the run's n-gram tables (built by the sweep: "
                         "observatory/sweep/ngram_tables.py)")
    return _kl_metrics(ctx, ctx.ngrams, settings) | _sampled_losses(ctx, settings) | _icl_metrics(ctx, settings)
