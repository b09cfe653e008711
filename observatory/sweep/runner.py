"""The sweep: every checkpoint of every run of an experiment, through every selected probe,
into the results store. Idempotent: what is stored for the same checkpoint file and probe
configuration is skipped, so a re-run computes only what is new."""

from __future__ import annotations

import importlib.util
import sys
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from multiprocessing import get_context
from pathlib import Path

import pandas as pd
import torch
from omegaconf import DictConfig, OmegaConf
from tokenizers import Tokenizer
from tqdm import tqdm

from conf import own_keys
from observatory import store
from observatory.hub import source as hub_source
from observatory.metrics import Metric
from observatory.probes import PROBES, requested_hooks
from observatory.probes.context import Context, Items, documents, pack_with_loss_mask, repeated_random_tokens
from observatory.probes.linear import SPLIT as LINEAR_SPLIT
from observatory.probes.ngram import NgramTables
from observatory.sweep.adaptive import coarse_to_fine
from observatory.sweep.discovery import Checkpoint, Problem, find_runs, list_checkpoints, load
from observatory.sweep.ngram_tables import StreamError, ensure_tables, load_tables
from observatory.sweep.shards import ShardError, assign
from observatory.sweep.shards import check as shards_check
from observatory.sweep.shards import cost as shard_cost
from train import rundir
from train.progress import Progress
from train.tokenizer import SPECIAL_TOKENS


class SweepError(ValueError):
    """Nothing can be swept (no runs, an unknown probe); the message names the fix."""


@dataclass
class RunInputs:
    """What every checkpoint of a run is probed on, built once per run."""

    items: Items
    linear_items: Items | None
    blocks: torch.Tensor
    block_tasks: list[str]
    documents: torch.Tensor
    repeated: torch.Tensor
    token_ids: dict[str, int]
    train_blocks: torch.Tensor  # (M, seq_len + 1): training-split items, packed as training packs them
    loss_masks: dict[str, torch.Tensor]  # input set -> (M, seq_len): the tokens training takes its loss on
    ngrams: NgramTables | None = None  # the training stream's n-gram counts (the ngram probe)
    sampled: dict[str, torch.Tensor] = field(default_factory=dict)  # "sampled/<n>" -> (S, n_ctx + 1) from the n-gram model
    sampling_blocks: torch.Tensor | None = None  # what the LLC samples on (sampling_data), when it runs

    @classmethod
    def load(cls, run_dir: Path, probe_cfgs: dict) -> RunInputs:
        info = rundir.read_run_json(run_dir)
        n_ctx = info["model_config"]["n_ctx"]
        probe_items = rundir.read_probe_items(run_dir)
        linear = [it for it in probe_items if it.get("split") == LINEAR_SPLIT]
        probe_items = [it for it in probe_items if it.get("split") != LINEAR_SPLIT]
        token_ids, ordinary, bos = vocabulary(run_dir)
        blocks, block_tasks, blocks_mask = packed_items(info, probe_items, "heldout")
        train_blocks, _, train_mask = packed_items(info, probe_items, "train")
        repeated = torch.zeros(0, n_ctx, dtype=torch.long)  # only the attention probe reads them
        if "attention" in probe_cfgs:
            attention = PROBES["attention"].configure(probe_cfgs["attention"])
            repeated = repeated_random_tokens(attention.n_sequences, n_ctx, ordinary, bos, attention.seed)
        ngrams, sampled = None, {}
        if "ngram" in probe_cfgs:
            settings = PROBES["ngram"].configure(probe_cfgs["ngram"])
            ensure_tables([run_dir], settings.max_order)  # the sweep has counted them already; a lone caller has not
            ngrams = load_tables(run_dir, settings.max_order)
            generator = torch.Generator().manual_seed(settings.seed)
            sampled = {f"sampled/{n}": ngrams.sample(n, settings.n_sampled, n_ctx + 1, generator)
                       for n in settings.sampled_orders}
        masks = {"blocks": blocks_mask, "train_blocks": train_mask}
        sampling_blocks = None
        if "llc" in probe_cfgs:
            sampling_blocks, masks["sampling_blocks"] = sampling_data(run_dir)
        task_items = [it for it in probe_items if it["task"] is not None]  # not a text run's documents
        return cls(Items.from_probe_items(task_items), Items.from_probe_items(linear) if linear else None,
                   blocks, block_tasks, documents(probe_items, n_ctx + 1), repeated, token_ids, train_blocks,
                   masks, ngrams, sampled, sampling_blocks)

    def context(self, model, probe_cfgs: dict, batch_size: int) -> Context:
        inputs = {"items": self.items.tokens, "blocks": self.blocks[:, :-1], "documents": self.documents[:, :-1],
                  "repeated": self.repeated, "train_blocks": self.train_blocks[:, :-1]}
        targets = {"blocks": self.blocks[:, 1:], "documents": self.documents[:, 1:],  # the next token of each position
                   "train_blocks": self.train_blocks[:, 1:]}
        if self.linear_items is not None:
            inputs["linear_items"] = self.linear_items.tokens
        for name, sampled in self.sampled.items():
            inputs[name], targets[name] = sampled[:, :-1], sampled[:, 1:]
        return Context(model, inputs, requested_hooks(model.cfg, probe_cfgs), batch_size, self.items,
                       self.linear_items, self.block_tasks, self.token_ids, targets,
                       sampling_blocks=self.sampling_blocks, loss_masks=self.loss_masks, ngrams=self.ngrams)


def sampling_data(run_dir: Path) -> tuple[torch.Tensor, torch.Tensor]:
    """What the LLC samples on: blocks (M, block_len) and the loss's mask (M, block_len - 1).
    For our runs the training-split items packed as training packs them, with training's mask
    (the answers alone under data.loss_on=answer); for a hub run, the stream cut from hub.text
    after the held-out documents, every token in the loss (none when it has no text)."""
    if hub_source.is_hub_run(run_dir):
        blocks = hub_source.stream_blocks(run_dir)
        if blocks is None:
            return torch.zeros(0, 2, dtype=torch.long), torch.zeros(0, 1, dtype=torch.bool)
        return blocks, torch.ones(len(blocks), blocks.shape[1] - 1, dtype=torch.bool)
    blocks, _, mask = packed_items(rundir.read_run_json(run_dir), rundir.read_probe_items(run_dir), "train")
    return blocks, mask


def packed_items(info: dict, items: list[dict], split: str) -> tuple[torch.Tensor, list[str], torch.Tensor]:
    """One split's items packed into blocks as training cuts them (data.seq_len + 1), with
    training's loss mask: every token, or the answers alone under data.loss_on=answer."""
    answer_only = info.get("config", {}).get("data", {}).get("loss_on") == "answer"
    return pack_with_loss_mask(items, rundir.block_length(info), split, answer_only)


def vocabulary(run_dir: Path) -> tuple[dict[str, int], list[int], int]:
    """(the run's token ids by token, the ordinary tokens' ids, the beginning-of-sequence id): from
    our tokenizer, or for a hub run the tokenizer's ids less its special tokens, within the model's
    vocabulary (hub.json)."""
    if hub_source.is_hub_run(run_dir):
        hub = hub_source.read_hub_json(run_dir)
        return {}, hub["ordinary_ids"], hub["bos_token_id"]
    token_ids = Tokenizer.from_file(str(run_dir / rundir.TOKENIZER)).get_vocab()
    return token_ids, sorted(i for t, i in token_ids.items() if t not in SPECIAL_TOKENS), token_ids["[BOS]"]


def probe_checkpoint(model, inputs: RunInputs, probe_cfgs: dict, batch_size: int = 256) -> tuple[dict, dict]:
    """({probe: {metric: value}}, {probe: {metric: ItemScores}}) for one model; the probes
    share its forward passes."""
    ctx = inputs.context(model, probe_cfgs, batch_size)
    metrics, item_scores = {}, {}
    for name, cfg in probe_cfgs.items():
        ctx.item_scores = {}
        metrics[name] = PROBES[name].fn(ctx, PROBES[name].configure(cfg))
        for metric, value in metrics[name].items():
            if not isinstance(value, Metric):
                raise TypeError(f"probe {name!r} returned {type(value).__name__} for {metric!r}: a probe returns "
                                "observatory.metrics.Metric values (value, kind, range, chance, stderr)")
        item_scores[name] = ctx.item_scores
    return metrics, item_scores


# ---- one checkpoint, in this process or a worker --------------------------------------
_RUN_INPUTS: dict[tuple, RunInputs] = {}  # per process: built once per run and probe set


def _probe_one(ckpt: Checkpoint, probe_cfgs: dict, batch_size: int,
               device: str = "cpu") -> tuple[Checkpoint, dict | None, str | None]:
    try:
        model = load(ckpt, device)
    except rundir.CheckpointError as e:
        return ckpt, None, str(e)
    key = (ckpt.run_dir, tuple(sorted(probe_cfgs)))  # the inputs a probe needs exist only where it was asked for
    if key not in _RUN_INPUTS:
        _RUN_INPUTS.clear()  # one run's inputs at a time: memory stays flat across runs
        _RUN_INPUTS[key] = RunInputs.load(ckpt.run_dir, probe_cfgs)
    return ckpt, probe_checkpoint(model, _RUN_INPUTS[key], probe_cfgs, batch_size), None


def _init_worker():
    torch.set_num_threads(1)  # workers share the cores instead of oversubscribing them


@dataclass
class Summary:
    runs: int = 0
    checkpoints: int = 0
    probed: int = 0
    skipped: int = 0
    left_out: int = 0  # checkpoints an adaptive sweep did not need
    others: int = 0  # checkpoints that other shards probe
    shard: int = 0
    shards: int = 1
    probes: list[str] = field(default_factory=list)
    problems: list[Problem] = field(default_factory=list)
    table: pd.DataFrame | None = None
    experiment_dir: Path | None = None
    rows: dict = field(default_factory=dict, repr=False)  # checkpoint -> its stored rows (probed now or before)

    def __str__(self) -> str:
        lines = [f"{self.runs} runs, {self.checkpoints} checkpoints: {self.probed} probed, {self.skipped} already "
                 f"done, {len(self.problems)} failed; probes: {', '.join(self.probes)}"]
        if self.shards > 1:
            lines[0] = f"shard {self.shard} of {self.shards}: " + lines[0].replace(
                " checkpoints:", f" checkpoints ({self.checkpoints - self.others} of them this shard's):")
        if self.left_out:
            evaluated = self.checkpoints - self.left_out
            lines.append(f"adaptive: {evaluated} of {self.checkpoints} checkpoints evaluated "
                         f"({evaluated / self.checkpoints:.0%}); {self.left_out} not needed to locate the onsets")
        lines += [f"  failed: {p.run} step {p.step}: {p.reason}" for p in self.problems]
        return "\n".join(lines)


def sweep_from_config(cfg: DictConfig, share=None) -> Summary:
    """The sweep that a composed observatory config (conf/observatory.yaml) asks for; the
    training keys an experiment file also sets are not read."""
    cfg = own_keys(cfg, "observatory")
    register_hub_repo(cfg)
    return sweep(store.experiment_dir(cfg), OmegaConf.to_container(cfg.probes, resolve=True),
                 workers=cfg.workers, batch_size=cfg.batch_size,
                 progress=sys.stderr.isatty() if cfg.progress is None else cfg.progress, adaptive=cfg.adaptive,
                 shard=cfg.shard, shards=cfg.shards, device=resolve_device(cfg.device, cfg.shard), share=share)


def register_hub_repo(cfg: DictConfig) -> None:
    """`hub.repo=...`: the repository becomes a run of the experiment (observatory/hub/source.py)."""
    hub = cfg.get("hub")
    if not hub or not hub.repo:
        return
    missing = [m for m in ("transformers", "transformer_lens") if importlib.util.find_spec(m) is None]
    if missing:
        raise SweepError(f"hub.repo= reads the hub's models with {' and '.join(missing)}, not installed: "
                         "pip install -e '.[hf]' -c constraints.txt")
    from train.packing import DataError

    try:
        run_dir = hub_source.register(store.experiment_dir(cfg), hub.repo, hub.revisions and list(hub.revisions),
                                      hub.every, hub.text and (hub.text if isinstance(hub.text, str) else list(hub.text)),
                                      hub.tokenizer, hub.n_ctx, hub.max_tokens, hub.stream_tokens, hub.keep)
    except (ValueError, OSError, DataError) as e:
        raise SweepError(str(e)) from None
    print(f"{hub.repo}: {len(rundir.read_manifest(run_dir))} revisions registered as the run {run_dir}", flush=True)


def resolve_device(name: str, shard: int = 0) -> str:
    """`device=auto|cpu|cuda|cuda:N` as torch names it: auto is the GPU when there is one (on a
    node with several, shard i takes GPU i mod their count), else the CPU."""
    if name == "auto":
        count = torch.cuda.device_count()
        return f"cuda:{shard % count}" if count else "cpu"
    try:
        device = torch.device(name)
    except RuntimeError:
        raise SweepError(f"device={name!r} is not a device: use auto, cpu, cuda or cuda:<index>") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise SweepError(f"device={name} but torch sees no CUDA GPU here (torch {torch.__version__}); "
                         "use device=auto or device=cpu")
    return name


def check_probes(probe_cfgs: dict) -> None:
    """Every probe known and its settings complete, before any work."""
    unknown = sorted(set(probe_cfgs) - set(PROBES))
    if unknown:
        raise SweepError(f"unknown probe(s) {unknown}; available: {', '.join(PROBES)}")
    for name, cfg in probe_cfgs.items():
        try:
            PROBES[name].configure(cfg)
        except ValueError as e:
            raise SweepError(str(e)) from None


def sweep(experiment_dir: Path, probe_cfgs: dict, workers: int = 1, batch_size: int = 256,
          progress: bool = True, adaptive: int | None = None, shard: int = 0, shards: int = 1,
          device: str = "cpu", share=None) -> Summary:
    """Probe every checkpoint, or with `adaptive=N` about N log-spaced checkpoints per run
    first and then only those needed to locate each headline curve's onset (adaptive.py).
    With `shards=N`, only this shard's share of the checkpoints (shards.py), and the results
    stay in their per-checkpoint files until `consolidate` (python -m observatory.report).
    `share`: the job's train.multirun.CoreShare, updated between checkpoints."""
    try:
        shards_check(shard, shards, adaptive)
    except ShardError as e:
        raise SweepError(str(e)) from None
    check_probes(probe_cfgs)
    run_dirs = find_runs(experiment_dir)
    if not run_dirs:
        raise SweepError(f"no runs under {experiment_dir} (no */run.json); train first, e.g. "
                         f"python -m train experiment_name={Path(experiment_dir).name}")
    try:
        with store.exclusive(experiment_dir) if shards == 1 else store.shard_lock(experiment_dir, shard):
            count_ngrams(run_dirs, probe_cfgs)
            return _sweep(experiment_dir, run_dirs, probe_cfgs, workers, batch_size, progress, adaptive,
                          shard, shards, device, share=share)
    except (store.StoreBusy, StreamError) as e:
        raise SweepError(str(e)) from None


def _sweep(experiment_dir: Path, run_dirs: list[Path], probe_cfgs: dict, workers: int, batch_size: int,
           progress: bool, adaptive: int | None, shard: int, shards: int, device: str,
           seen: frozenset = frozenset(), consolidating: bool = True, share=None) -> Summary:
    """The sweep under its lock; checkpoints in `seen` ((run, step, sha256): a follower has
    handled them already) are left alone."""
    hashes = {name: PROBES[name].config_hash(cfg) for name, cfg in probe_cfgs.items()}
    summary = Summary(runs=len(run_dirs), probes=list(probe_cfgs), experiment_dir=Path(experiment_dir),
                      shard=shard, shards=shards)
    infos = {run_dir.name: rundir.read_run_json(run_dir) for run_dir in run_dirs}
    checkpoints = {run_dir.name: {c.step: c for c in list_checkpoints(run_dir)} for run_dir in run_dirs}
    summary.checkpoints = sum(map(len, checkpoints.values()))
    if shards > 1:  # this shard's share alone
        checkpoints = own_share(checkpoints, infos, shard, shards)
        summary.others = summary.checkpoints - sum(map(len, checkpoints.values()))
    checkpoints = {run: {step: c for step, c in by_step.items() if (c.run, c.step, c.sha256) not in seen}
                   for run, by_step in checkpoints.items()}
    rows = {c: store.read_checkpoint(experiment_dir, c) for by_step in checkpoints.values() for c in by_step.values()}
    summary.rows = rows

    run_probes = {run_dir.name: probes_for(run_dir, probe_cfgs) for run_dir in run_dirs}

    def missing(ckpt) -> dict:
        done = store.done_probes(rows[ckpt], ckpt.sha256, hashes)
        return {n: c for n, c in run_probes[ckpt.run].items() if n not in done}

    done = {c for c in rows if not missing(c)}  # already done: always part of the picture
    summary.skipped = len(done)
    probed = set()
    bar = tqdm(unit="probe", desc="probing checkpoints", disable=not progress)
    lines = None if progress else Progress(0)  # no bar: a plain line every so often

    def probe(selected: set[Checkpoint]) -> None:
        todo = {c: m for c in sorted(selected - probed, key=lambda c: (c.run, c.step)) if (m := missing(c))}
        probed.update(selected)
        bar.total = (bar.total or 0) + sum(map(len, todo.values()))
        if lines:
            lines.total += len(todo)
        for ckpt, results, error in _run(todo, workers, batch_size, device):  # workers return results; only we write
            redone = list(todo[ckpt])
            bar.update(len(redone))
            if lines and lines.due():
                print(f"probing: {lines.line(summary.probed + len(summary.problems) + 1, 'checkpoints')}", flush=True)
            if share is not None and workers <= 1:
                share.update()  # the jobs beside this one may have finished: a larger share
            if error is not None:
                summary.problems.append(Problem(ckpt.run, ckpt.step, error))
                continue
            rows[ckpt] = store.write_checkpoint(experiment_dir, ckpt, infos[ckpt.run], *results, hashes, rows[ckpt],
                                                redone)
            summary.probed += 1

    def probe_steps(selected: dict[str, set[int]]) -> dict[str, pd.DataFrame]:
        probe({checkpoints[run][step] for run, steps in selected.items() for step in steps})
        frames = {run: [rows[c] for c in by_step.values() if c in probed and len(rows[c])]
                  for run, by_step in checkpoints.items()}
        return {run: pd.concat(run_frames) for run, run_frames in frames.items() if run_frames}

    if adaptive:
        chosen = coarse_to_fine(
            {run: sorted(by_step) for run, by_step in checkpoints.items()}, adaptive,
            {run: {c.step for c in done if c.run == run} for run in checkpoints}, probe_steps)
        summary.left_out = len(rows) - sum(map(len, chosen.values()))
    else:
        probe(set(rows))
    bar.close()
    if shards == 1 and consolidating:  # a shard's results wait in their files for `consolidate`, after every shard
        summary.table = consolidate(experiment_dir)
    return summary


def count_ngrams(run_dirs: list[Path], probe_cfgs: dict) -> None:
    """The n-gram tables of every run the ngram probe applies to: counted once per training
    stream, before any checkpoint (a follower: before a new run's first)."""
    runs = [r for r in run_dirs if "ngram" in probes_for(r, probe_cfgs)]
    if runs:
        ensure_tables(runs, PROBES["ngram"].configure(probe_cfgs["ngram"]).max_order)


_SAID: set[tuple[str, str]] = set()  # (run, probe) left out and said so, once per process


def probes_for(run_dir: Path, probe_cfgs: dict) -> dict:
    """The probes that apply to a run: all of them to ours; to a hub repository, those that do
    not read our tasks' items, the text ones only with hub.text (hub/source.py: applicable_probes;
    the others said once)."""
    if not hub_source.is_hub_run(run_dir):
        return probe_cfgs
    try:
        kept, left_out = hub_source.applicable_probes(probe_cfgs, bool(rundir.read_probe_items(run_dir)))
    except ValueError as e:
        raise SweepError(f"{run_dir.name} (a hub repository): {e}") from None
    unsaid = {name: why for name, why in left_out.items() if (run_dir.name, name) not in _SAID}
    if unsaid:
        print(f"{run_dir.name} (a hub repository): " + "; ".join(f"{name} left out: {why}" for name, why in unsaid.items()),
              flush=True)
        _SAID.update((run_dir.name, name) for name in unsaid)
    return kept


def own_share(checkpoints: dict[str, dict[int, Checkpoint]], infos: dict[str, dict], shard: int,
              shards: int) -> dict[str, dict[int, Checkpoint]]:
    """The checkpoints (run -> step -> checkpoint) that shard `shard` of `shards` probes."""
    costs = {(run, step): shard_cost(infos[run]["n_params"], infos[run]["model_config"]["n_ctx"])
             for run, by_step in checkpoints.items() for step in by_step}
    owner = assign(costs, costs, shards)
    return {run: {step: c for step, c in by_step.items() if owner[run, step] == shard}
            for run, by_step in checkpoints.items()}


def consolidate(experiment_dir: Path) -> pd.DataFrame:
    """Every stored checkpoint file whose checkpoint is still in a manifest -> results.parquet and
    item_results.parquet (whichever job wrote it); the results table."""
    keep = {(c.run, c.step, c.sha256) for run_dir in find_runs(experiment_dir) for c in list_checkpoints(run_dir)}
    store.consolidate(experiment_dir, keep, "items")
    return pd.read_parquet(store.consolidate(experiment_dir, keep))


def _run(todo: dict, workers: int, batch_size: int, device: str = "cpu"):
    """(checkpoint, metrics, error) in checkpoint order, from this process or `workers` processes."""
    if workers <= 1:
        return (_probe_one(ckpt, cfgs, batch_size, device) for ckpt, cfgs in todo.items())
    pool = ProcessPoolExecutor(max_workers=workers, mp_context=get_context("spawn"), initializer=_init_worker)
    futures = [pool.submit(_probe_one, ckpt, cfgs, batch_size, device) for ckpt, cfgs in todo.items()]

    def results():
        with pool:
            for future in futures:
                yield future.result()

    return results()

