"""Every probe against a case whose answer is known independently: hand-built models and
closed-form values."""

import math

import pytest
import torch
from conftest import probe_defaults

from observatory.metrics import Metric
from observatory.probes import PROBES, requested_hooks
from observatory.probes.attention import MAX_CHANCE
from observatory.probes.context import Context, Items, documents, pack_blocks, repeat_layout, repeated_random_tokens
from observatory.probes.linear import linear_probe
from observatory.probes.loss import icl_positions
from train.model import GPT
from train.model_config import GPTConfig

DEFAULTS = probe_defaults()
V = 12  # vocabulary: 4 special tokens, 8 ordinary ones


def model(**kw) -> GPT:
    torch.manual_seed(0)
    return GPT(GPTConfig(**{"vocab_size": V, "n_layer": 2, "n_ctx": 16, "d_model": 32, "n_head": 2, **kw})).eval()


def context(m: GPT, items: list[dict] | None = None, probes=("capability", "loss", "attention", "linear")) -> Context:
    items = items or []
    hooks = requested_hooks(m.cfg, {name: DEFAULTS[name] for name in probes})
    blocks, block_tasks = pack_blocks(items, m.cfg.n_ctx + 1) if items else (torch.zeros(0, 17, dtype=torch.long), [])
    attention = DEFAULTS["attention"]  # the probe reads the repeats' layout from its seed
    repeated = repeated_random_tokens(attention["n_sequences"], m.cfg.n_ctx, list(range(4, V)), bos=1,
                                      seed=attention["seed"])
    linear = [it for it in items if it.get("split") == "linear"]
    items = [it for it in items if it.get("split") != "linear"]
    parsed = Items.from_probe_items(items) if items else None
    docs = documents(items, m.cfg.n_ctx + 1)
    inputs = {"items": parsed.tokens if parsed else None, "blocks": blocks[:, :-1], "repeated": repeated,
              "documents": docs[:, :-1]}
    if linear:
        inputs["linear_items"] = Items.from_probe_items(linear).tokens
    # one batch of up to 1024 rows: the planting hooks below see every row at once
    return Context(m, inputs, hooks, 1024, parsed, Items.from_probe_items(linear) if linear else None, block_tasks,
                   {f"w{i}": i for i in range(V)}, {"blocks": blocks[:, 1:], "documents": docs[:, 1:]})


def run(name: str, ctx: Context) -> dict[str, Metric]:
    """One probe on a context, with its settings from its config file."""
    return PROBES[name].fn(ctx, PROBES[name].configure(DEFAULTS[name]))


def values(metrics: dict[str, Metric]) -> dict[str, float]:
    assert all(isinstance(m, Metric) for m in metrics.values())
    return {name: m.value for name, m in metrics.items()}


def items_of(task: str, n: int, answer_len: int, seed: int = 0, **meta) -> list[dict]:
    g = torch.Generator().manual_seed(seed)
    out = []
    for _ in range(n):
        prompt = [1] + torch.randint(4, V, (3,), generator=g).tolist()
        answer = torch.randint(4, V, (answer_len,), generator=g).tolist()
        out.append({"task": task, "prompt_ids": prompt, "answer_ids": answer, "suffix_ids": [2], "metadata": dict(meta)})
    return out


# ---- attention ----------------------------------------------------------------------
def content_matching(tokens: torch.Tensor) -> torch.Tensor:
    """(B, T) -> (B, T): where a head that matches content attends from each position: the
    position after the latest earlier occurrence of its token, else position 0."""
    earlier = (tokens[:, :, None] == tokens[:, None, :]).tril(-1)  # (B, q, p): token p equals token q, p < q
    latest = (earlier * torch.arange(tokens.shape[1])).amax(-1)  # (B, T), 0 where none (then so is `earlier`)
    return torch.where(earlier.any(-1), latest + 1, 0)


def one_key(keys: torch.Tensor, T: int) -> torch.Tensor:
    """keys (B, T) -> a pattern (B, T, T) attending from each position to its key alone."""
    return torch.nn.functional.one_hot(keys, T).float()


def force(*heads):
    """A hook that sets head h's pattern to attend at heads[h](tokens, T) -> keys (B, T); the
    other heads attend to position 0."""

    def hook(pattern, hook):
        B, H, T, _ = pattern.shape
        out = torch.zeros_like(pattern)
        out[..., 0] = 1.0
        for h, keys in enumerate(heads):
            out[:, h] = one_key(keys(CURRENT["tokens"], T), T)
        return out

    return hook


CURRENT = {}  # the tokens of the forward pass under way, for hooks that attend by content


def watched(m: GPT) -> GPT:
    m.register_forward_pre_hook(lambda module, args: CURRENT.update(tokens=args[0]))
    return m


def offset(d: int):
    return lambda tokens, T: (torch.arange(T) - d).clamp(min=0).expand(len(tokens), T)


def test_content_matching_and_previous_token_heads_score_one():
    m = watched(model())
    with m.hooks([("blocks.0.attn.hook_pattern", force(offset(1))),
                  ("blocks.1.attn.hook_pattern", force(lambda tokens, T: content_matching(tokens)))]):
        metrics = values(run("attention", context(m, probes=("attention",))))
    assert metrics["prev_token/L0H0"] == pytest.approx(1.0)
    assert metrics["induction/L1H0"] == pytest.approx(1.0)
    assert metrics["induction/max"] == pytest.approx(1.0) and metrics["prev_token/max"] == pytest.approx(1.0)
    assert metrics["induction/L0H0"] == 0.0  # repeats of 3 or more: the target is never one back
    assert metrics["induction/L1H1"] == 0.0 and metrics["prev_token/L1H1"] < 0.1  # attends to position 0 only


def test_a_fixed_offset_head_scores_chance_at_best():
    """Every head that looks a fixed distance back scores at most the declared chance, and the
    best of them exactly that: chance is what position alone earns."""
    m = watched(model())
    T = m.cfg.n_ctx
    scores, chance = [], set()
    for d in range(0, T, 2):  # heads 0 and 1 of layer 1 at offsets d and d + 1
        with m.hooks([("blocks.1.attn.hook_pattern", force(offset(d), offset(d + 1)))]):
            metrics = run("attention", context(m, probes=("attention",)))
        scores += [metrics["induction/L1H0"].value, metrics["induction/L1H1"].value]
        chance |= {metrics[f"induction/L1H{h}"].chance for h in (0, 1)}
    (chance,) = chance
    assert max(scores) == pytest.approx(chance, abs=1e-6) and chance <= MAX_CHANCE
    assert scores[1] == 0.0  # a previous-token head is no induction head


def uniform_induction_score(tokens: torch.Tensor, seed: int) -> float:
    """The mean over sequences of 1 / (q + 1) over the queries of the induction score, by hand:
    second-copy tokens that occur once before."""
    repeats = repeat_layout(len(tokens), tokens.shape[1], seed)
    per_sequence = []
    for seq, start, length in zip(tokens.tolist(), repeats.start.tolist(), repeats.length.tolist()):
        queries = [q for q in range(start + length, start + 2 * length) if seq[:q].count(seq[q]) == 1]
        if queries:
            per_sequence.append(sum(1 / (q + 1) for q in queries) / len(queries))
    return sum(per_sequence) / len(per_sequence)


def test_uniform_attention_scores_at_most_chance():
    m = model()
    with torch.no_grad():
        for block in m.blocks:  # zero queries and keys: every score 0, attention uniform over the past
            block.attn.qkv.weight[: 2 * 32].zero_()
            block.attn.qkv.bias[: 2 * 32].zero_()
    ctx = context(m, probes=("attention",))
    metrics = run("attention", ctx)
    T = m.cfg.n_ctx
    induction = uniform_induction_score(ctx.inputs["repeated"], DEFAULTS["attention"]["seed"])
    previous = sum(1 / (q + 1) for q in range(1, T)) / (T - 1)
    for layer in range(2):
        for head in range(2):
            assert metrics[f"induction/L{layer}H{head}"].value == pytest.approx(induction, rel=1e-5)
            assert metrics[f"induction/L{layer}H{head}"].value < metrics[f"induction/L{layer}H{head}"].chance
            # uniform attention is the previous-token score's chance, and every sequence scores the same
            assert metrics[f"prev_token/L{layer}H{head}"].value == pytest.approx(previous, rel=1e-5)
            assert metrics[f"prev_token/L{layer}H{head}"].chance == pytest.approx(previous, rel=1e-6)
            assert metrics[f"prev_token/L{layer}H{head}"].stderr < 1e-6


@pytest.mark.parametrize("n_layer,n_ctx", [(2, 8), (1, 16)])  # grokking's context; a one-layer model
def test_no_induction_score_where_no_induction_head_can_be_told(n_layer, n_ctx):
    m = watched(model(n_layer=n_layer, n_ctx=n_ctx))
    with m.hooks([("blocks.0.attn.hook_pattern", force(lambda tokens, T: content_matching(tokens)))]):
        metrics = run("attention", context(m, probes=("attention",)))
    assert not any(name.startswith("induction/") for name in metrics)
    assert "prev_token/max" in metrics and "prev_token/L0H0" in metrics


def test_repeats_vary_in_length_and_position_and_fill_the_context():
    n, n_ctx, vocab = 32, 16, list(range(4, V))
    tokens = repeated_random_tokens(n, n_ctx, vocab, bos=1, seed=0)
    repeats = repeat_layout(n, n_ctx, seed=0)
    assert tokens.shape == (n, n_ctx) and (tokens[:, 0] == 1).all() and tokens[:, 1:].ge(4).all()
    assert tokens.equal(repeated_random_tokens(n, n_ctx, vocab, bos=1, seed=0))
    assert not tokens.equal(repeated_random_tokens(n, n_ctx, vocab, bos=1, seed=1))
    lengths, counts = repeats.length.unique(return_counts=True)
    assert lengths.tolist() == [3, 4, 5, 6, 7] and counts.max() - counts.min() <= 1  # each used equally often
    assert len(set(repeats.start.tolist())) > 3 and (repeats.start + 2 * repeats.length <= n_ctx).all()
    for seq, start, length in zip(tokens, repeats.start.tolist(), repeats.length.tolist()):
        first, second = seq[start : start + length], seq[start + length : start + 2 * length]
        assert first.equal(second) and len(set(first.tolist())) == length  # distinct: 8 tokens hold 7
        assert not set(seq[1:start].tolist()) & set(first.tolist())  # the filler before never holds them


# ---- capability ---------------------------------------------------------------------
def forced_model(logit: float, wrong_positions=()) -> tuple[GPT, list]:
    """A GPT whose logits at each position are `logit` on the next token of its input and 0
    elsewhere (identity unembedding, final residual replaced by a scaled one-hot): it knows
    every item's answer, whatever it generated before. At `wrong_positions` it prefers
    another token instead."""
    m = model()
    with torch.no_grad():
        m.lm_head.weight.copy_(torch.eye(V, 32))
    m.register_forward_pre_hook(lambda module, args: setattr(m, "current_tokens", args[0]))

    def plant(x, hook):
        target = torch.roll(m.current_tokens, -1, dims=1)  # the next token (the last position's is unused)
        for pos in wrong_positions:
            target[:, pos] = (target[:, pos] + 1 - 4) % (V - 4) + 4  # a different ordinary token
        planted = torch.zeros_like(x)
        planted.scatter_(-1, target[..., None], logit)
        return planted

    return m, [("ln_final.hook_normalized", plant)]


@pytest.mark.parametrize("logit", [0.0, 1.5, 4.0])
def test_forced_answers_give_closed_form_metrics(logit):
    items = items_of("copy", 20, answer_len=3)
    ctx = context(model(), items, probes=("capability",))
    m, hooks = forced_model(logit)
    ctx.model = m
    with m.hooks(hooks):
        metrics = values(run("capability", ctx))
    p = math.exp(logit) / (math.exp(logit) + V - 1)  # probability of the right token
    q = 1 / (math.exp(logit) + V - 1)  # of each other token
    assert metrics["copy/answer_logprob"] == pytest.approx(math.log(p), rel=1e-6)
    assert metrics["copy/brier"] == pytest.approx((1 - p) ** 2 + (V - 1) * q**2, rel=1e-5)  # float32 logits
    if logit > 0:
        assert metrics["copy/exact_match"] == 1.0 and metrics["copy/token_accuracy"] == 1.0
        assert metrics["copy/edit_distance"] == 0.0
    else:  # every token ties and argmax takes the lowest id, 0 ([PAD]): never an answer
        assert metrics["copy/exact_match"] == 0.0 and metrics["copy/token_accuracy"] == 0.0
        assert metrics["copy/edit_distance"] == 1.0  # greedy writes [PAD] [PAD] [PAD]: 3 substitutions


def test_training_part_items_are_scored_separately():
    items = items_of("copy", 10, answer_len=2) + [i | {"split": "train"} for i in items_of("copy", 10, 2, seed=1)]
    ctx = context(model(), items, probes=("capability",))
    m, hooks = forced_model(5.0, wrong_positions=[3])  # every first answer token wrong
    ctx.model = m
    with m.hooks(hooks):
        metrics = values(run("capability", ctx))
    assert {"copy/exact_match", "copy/train_exact_match", "copy/train_brier", "copy/edit_distance"} <= set(metrics)
    assert "copy/train_edit_distance" not in metrics  # greedy decoding on held-out items alone
    assert metrics["copy/token_accuracy"] == metrics["copy/train_token_accuracy"] == 0.5


def test_one_wrong_answer_token_breaks_exact_match_only():
    items = items_of("copy", 20, answer_len=3)  # answers at positions 3, 4, 5 (predicted from 3..5)
    ctx = context(model(), items, probes=("capability",))
    m, hooks = forced_model(5.0, wrong_positions=[4])
    ctx.model = m
    with m.hooks(hooks):
        metrics = values(run("capability", ctx))
    assert metrics["copy/exact_match"] == 0.0
    assert metrics["copy/token_accuracy"] == pytest.approx(2 / 3)
    assert metrics["copy/edit_distance"] == pytest.approx(1 / 3)  # this model gets the third token right after it


def test_agreement_compares_the_right_and_wrong_forms():
    items = items_of("grammar", 10, answer_len=1, wrong="w5")
    for item in items:
        item["answer_ids"] = [6]
    ctx = context(model(), items, probes=("capability",))
    m, hooks = forced_model(3.0)
    ctx.model = m
    with m.hooks(hooks):
        metrics = values(run("capability", ctx))
    # a choice between two forms is scored by that choice alone: the verb's lemma is not the model's to know
    assert metrics == {"grammar/agreement": 1.0, "grammar/agreement_prob": pytest.approx(1 / (1 + math.exp(-3.0)))}


def counts_up(tokens):
    """After token x, predict x + 1: wrong once, it stays wrong under greedy decoding."""
    logits = torch.zeros(*tokens.shape, RULE_V)
    logits.scatter_(-1, ((tokens + 1) % RULE_V)[..., None], 10.0)
    return logits


def test_edit_distance_is_of_the_greedy_answer_not_the_teacher_forced_one():
    # prompt [BOS] 5, answer 7 8 9. Teacher-forced, the model predicts 6 (wrong), 8, 9: two of three tokens right.
    # Greedy, it writes 6 7 8: no token in place, yet two edits (drop 6, add 9) from the answer, not three.
    items = [{"task": "count", "prompt_ids": [1, 5], "answer_ids": [7, 8, 9], "suffix_ids": [2], "metadata": {}}]
    parsed = Items.from_probe_items(items)
    ctx = Context(RuleModel(counts_up, 8), {"items": parsed.tokens}, {}, 1024, parsed)
    metrics = values(run("capability", ctx))
    assert ctx.greedy_answers(torch.tensor([0]))[0, 2:5].tolist() == [6, 7, 8]
    assert metrics["count/token_accuracy"] == pytest.approx(2 / 3) and metrics["count/exact_match"] == 0.0
    assert metrics["count/edit_distance"] == pytest.approx(2 / 3)


def counted_items(n: int, seed: int) -> list[dict]:
    """Prompt [BOS] a, answer a+1 a+2 ...: counts_up gets them right, but for the tokens that
    are replaced at random (answers of 1 to 4 tokens, some wrong at any place, some not at all)."""
    g = torch.Generator().manual_seed(seed)
    out = []
    for _ in range(n):
        a, length = int(torch.randint(4, 40, (1,), generator=g)), int(torch.randint(1, 5, (1,), generator=g))
        answer = [a + 1 + k for k in range(length)]
        for k in range(length):
            if torch.rand(1, generator=g) < 0.25:
                answer[k] = int(torch.randint(4, 60, (1,), generator=g))
        out.append({"task": "count", "prompt_ids": [1, a], "answer_ids": answer, "suffix_ids": [2], "metadata": {}})
    return out


@pytest.mark.parametrize("which", ["rule", "gpt"])
def test_greedy_answers_equal_token_by_token_decoding(which):
    """The shortcut (reuse the teacher-forced pass while the answer is right so far) against
    the definition: each answer token the argmax after the prompt and the tokens generated."""
    if which == "rule":  # right, wrong and right again, at every place
        items, m = counted_items(200, seed=0), RuleModel(counts_up, 8)
    else:  # a random GPT: wrong nearly everywhere, every item decoded on its own prefix
        items, m = items_of("copy", 30, answer_len=4) + items_of("short", 30, answer_len=2, seed=1), model()
    parsed = Items.from_probe_items(items)
    ctx = Context(m, {"items": parsed.tokens}, {}, 64, parsed)  # batches of 64: the shortcut's batching too
    fast = ctx.greedy_answers(torch.arange(len(items)))
    for row, item in enumerate(items):
        seq = list(item["prompt_ids"])
        for _ in item["answer_ids"]:
            seq.append(int(m(torch.tensor([seq]))[0, -1].argmax()))
        p = len(item["prompt_ids"])
        assert fast[row, p : len(seq)].tolist() == seq[p:], row
        assert fast[row, :p].tolist() == item["prompt_ids"]
    if which == "rule":
        assert 0 < sum(fast[r, 2] != parsed.tokens[r, 2] for r in range(len(items))) < len(items)


# ---- loss ---------------------------------------------------------------------------
def test_position_independent_loss_on_packed_blocks():
    m = model()
    with torch.no_grad():
        m.lm_head.weight.zero_()  # uniform predictions: loss log V at every position
    metrics = values(run("loss", context(m, items_of("copy", 40, 3) + items_of("add", 40, 2), ("loss",))))
    assert metrics["all"] == pytest.approx(math.log(V)) and metrics["task/add"] == pytest.approx(math.log(V))
    assert metrics["position/0"] == pytest.approx(math.log(V)) and metrics["position/15"] == pytest.approx(math.log(V))
    assert "icl_score" not in metrics  # no example fills the context: no document to score


RULE_V = 64


class RuleModel:
    """Not a GPT: logits by a rule whose in-context learning is known by construction."""

    def __init__(self, rule, n_ctx: int):
        self.rule, self.cfg = rule, GPTConfig(vocab_size=RULE_V, n_layer=1, n_ctx=n_ctx)

    def run_with_cache(self, tokens, names_filter=None):
        return self.rule(tokens), {}

    def __call__(self, tokens):
        return self.rule(tokens)


def ignores_context(tokens):  # the same prediction everywhere
    return torch.zeros(*tokens.shape, RULE_V)


def copies_from_context(tokens):
    """After token x, predict what followed the previous occurrence of x (an induction head)."""
    logits = torch.zeros(*tokens.shape, RULE_V)
    for row, seq in enumerate(tokens.tolist()):
        for t in range(len(seq)):
            earlier = [j for j in range(t) if seq[j] == seq[t]]
            if earlier:
                logits[row, t, seq[earlier[-1] + 1]] = 10.0
    return logits


def repeated_documents(n: int, half: int, n_ctx: int, filler: int = 2) -> list[dict]:
    """[BOS] r r [EOS]: whole examples longer than the context, each scored from position 0;
    r has distinct symbols, so that a copy is exactly right."""
    g = torch.Generator().manual_seed(3)
    rows = [[1] + (r := (4 + torch.randperm(RULE_V - 4, generator=g)[:half]).tolist()) + r for _ in range(n)]
    return [{"task": "copy", "prompt_ids": seq[:2], "answer_ids": seq[2:], "suffix_ids": [2] * filler, "metadata": {}}
            for seq in rows]


@pytest.mark.parametrize("rule,expected", [(ignores_context, "zero"), (copies_from_context, "negative")])
def test_icl_score_is_zero_without_context_use_and_negative_with_it(rule, expected):
    n_ctx = 32
    items = repeated_documents(64, 16, n_ctx)  # 33 + 2 tokens, cut to 33: the late position sits in the copy
    docs = documents(items, n_ctx + 1)
    assert docs.shape == (64, n_ctx + 1) and (docs[:, 0] == 1).all()
    early, late = icl_positions(n_ctx)
    assert (early, late) == (3, 31)
    inputs = {"documents": docs[:, :-1], "blocks": torch.zeros(0, n_ctx, dtype=torch.long)}
    ctx = Context(RuleModel(rule, n_ctx), inputs, {}, 1024, targets={"documents": docs[:, 1:]})
    score = run("loss", ctx)["icl_score"]
    if expected == "zero":
        assert score.value == 0.0
    else:  # the late token is copied (loss ~0), the early one is a uniform guess (log V)
        assert score.value == pytest.approx(-math.log(RULE_V), abs=0.01)


def test_icl_positions_scale_olssons_500_and_50_of_512():
    assert icl_positions(512) == (50, 500) and icl_positions(64) == (6, 62)


# ---- weights ------------------------------------------------------------------------
def test_weight_norms_in_closed_form():
    m = model()
    with torch.no_grad():
        for p in m.parameters():
            p.fill_(0.5)
    metrics = values(run("weights", context(m, probes=())))
    assert metrics["norm/total"] == pytest.approx(0.5 * math.sqrt(m.n_params()))
    block0 = sum(p.numel() for p in m.blocks[0].parameters())
    assert metrics["norm/blocks.0"] == pytest.approx(0.5 * math.sqrt(block0))
    assert metrics["norm/wte"] == pytest.approx(0.5 * math.sqrt(V * 32))


# ---- linear -------------------------------------------------------------------------
def test_linear_probe_decodes_a_planted_latent_and_not_noise():
    g = torch.Generator().manual_seed(0)
    labels = torch.randint(0, 10, (400,), generator=g)
    directions = torch.randn(10, 24, generator=g)
    features = directions[labels] + 0.3 * torch.randn(400, 24, generator=g)
    correct, chance = linear_probe(features, labels, 300, shrinkage=0.01)
    assert correct.mean() > 0.95 and 0.05 < chance < 0.2  # ten classes
    correct, chance = linear_probe(torch.randn(400, 24, generator=g), labels, 300, shrinkage=0.01)
    assert correct.mean() < 0.25


def test_linear_probe_answers_only_classes_it_was_fitted_on():
    labels = torch.tensor([0, 1] * 50 + [2] * 20)  # class 2 only among the scored rows
    features = torch.nn.functional.one_hot(labels, 3).double()  # a perfect representation
    correct, chance = linear_probe(features, labels, 100, shrinkage=0.01)
    assert correct.sum() == 0 and chance == 0.0  # never fitted: never answered, counted wrong


def test_linear_probe_reads_the_residual_stream_of_every_layer_on_its_own_items():
    items = [it | {"split": "linear"} for it in items_of("modular_addition", 200, answer_len=1)]
    items += items_of("modular_addition", 5, answer_len=1)  # held-out items: not the probe's
    m = model()

    def plant(x, hook):  # write the answer token's one-hot into the embedding stream
        planted = x.clone()
        planted[..., :V] += 10 * torch.nn.functional.one_hot(torch.roll(hook.current_tokens, -1, 1), V)
        return planted

    ctx = context(m, items, probes=("linear",))
    assert ctx.inputs["linear_items"].shape[0] == 200
    m.hook_embed.current_tokens = ctx.inputs["linear_items"]
    with m.hooks([("hook_embed", plant)]):
        metrics = run("linear", ctx)
    assert metrics["modular_addition/layer0"].value == 1.0 and metrics["modular_addition/best"].value == 1.0
    assert set(metrics) == {f"modular_addition/layer{i}" for i in range(3)} | {"modular_addition/best"}
    assert 0.1 < metrics["modular_addition/layer0"].chance < 0.3  # the commonest of 8 answers, 50 scored items


# ---- every capability metric is reachable ----------------------------------------------
def oracle(items: list[dict], vocab_size: int):
    """A model that always answers right, as far as the prompt decides: after any prompt
    (+ answer so far) seen in `items` it puts a large logit on every next token that some
    item with that prompt has. Where a prompt leaves the answer open (items that share it
    differ), the right answers tie, as they would for any model that only knows the task."""
    right: dict[tuple, set[int]] = {}
    for it in items:
        seq = it["prompt_ids"] + it["answer_ids"]
        for t in range(len(it["prompt_ids"]) - 1, len(seq) - 1):
            right.setdefault(tuple(seq[: t + 1]), set()).add(seq[t + 1])

    def rule(tokens):
        logits = torch.zeros(*tokens.shape, vocab_size)
        for row, seq in enumerate(tokens.tolist()):
            for t in range(len(seq)):
                for token in right.get(tuple(seq[: t + 1]), ()):
                    logits[row, t, token] = 50.0
        return logits

    return rule


def test_a_model_that_always_answers_right_scores_the_top_of_every_bounded_metric():
    import random

    from train.data import tokenize_item
    from train.tasks import TASKS
    from train.tokenizer import build_tokenizer

    tasks = [cls() for cls in TASKS.values()]  # every task with its default parameters
    tokenizer = build_tokenizer([s for task in tasks for s in task.symbols()])
    items = [tokenize_item(item, tokenizer, split) for task in tasks
             for split, found in (("heldout", task.held_out_items(40, 0)), ("train", task.items_anywhere(40, 0)))
             for item in found]
    rng = random.Random(0)  # the task's distribution, for the answers each prompt can have
    population = [tokenize_item(task.sample(rng), tokenizer, "any") for task in tasks for _ in range(3000)]
    parsed = Items.from_probe_items(items)
    vocab = tokenizer.get_vocab()
    rule_model = RuleModel(oracle(items + population, len(vocab)), parsed.tokens.shape[1])
    ctx = Context(rule_model, {"items": parsed.tokens}, {}, 1024, parsed, token_ids=vocab)
    metrics = run("capability", ctx)
    bounded = {name: m for name, m in metrics.items() if m.best is not None}
    assert {f"{t.name}/{split}exact_match" for t in tasks if t.name != "grammar" for split in ("", "train_")} <= set(bounded)
    assert {"grammar/agreement", "grammar/train_agreement_prob"} <= set(bounded)
    for name, m in bounded.items():
        assert m.value == pytest.approx(m.best, abs=1e-9), name
