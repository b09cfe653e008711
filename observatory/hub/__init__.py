"""Public checkpoint suites on the Hugging Face hub (Pythia, PolyPythias, delphi-suite, CRFM,
SmolLM2) as a checkpoint source: a repository is a run, a revision a checkpoint.

`python -m observatory hub.repo=EleutherAI/pythia-70m` registers the repository as a run
directory under the experiment (run.json, manifest.jsonl with one row per revision, the
probe items cut from `hub.text`), so that the sweep, the store and the report work as for our
own runs; the sweep loads each revision through `source.load`, the hub's weights wrapped with
TransformerLens's hook names (model.py). docs/suites.md."""
