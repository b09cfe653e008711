"""Every task's answers against an independent checker, and held-out items never trained on."""

import random

import pytest

from train.tasks import TASKS, make_task
from train.tasks.grammar import NOUNS


def check_induction(task, prompt, answer, meta):
    """The prompt's last symbol occurs once before it; the answer continues what followed it there."""
    earlier = [i for i, symbol in enumerate(prompt[:-1]) if symbol == prompt[-1]]
    return (len(earlier) == 1 and answer == prompt[earlier[0] + 1 : earlier[0] + 1 + len(answer)]
            and 1 <= len(answer) < task.spans[1] and all(s.startswith("r") for s in prompt))


def check_associative_recall(task, prompt, answer, meta):
    memory, i = {}, 0
    while prompt[i] != "?":  # key-value pairs
        memory[prompt[i]] = prompt[i + 1]
        i += 2
    queries = prompt[i:]  # ? k v ? k v ... ? k
    answered = [(queries[j + 1], queries[j + 2]) for j in range(0, len(queries) - 2, 3)]
    return all(memory[k] == v for k, v in answered) and answer == [memory[queries[-1]]]


def check_modular_addition(task, prompt, answer, meta):
    a, plus, b, eq = prompt
    return (plus, eq) == ("+", "=") and int(answer[0]) == (int(a) + int(b)) % task.p


def check_addition(task, prompt, answer, meta):
    n = task.n_digits
    a, b = int("".join(prompt[:n])), int("".join(prompt[n + 1 : 2 * n + 1]))
    return prompt[n] == "+" and len(answer) == n + 1 and int("".join(answer)) == a + b


def check_dyck(task, prompt, answer, meta):
    closer = {"(": ")", "[": "]", "{": "}", "<": ">"}
    stack = []
    for c in prompt[:-1] + answer:
        if c in closer:
            stack.append(closer[c])
        elif not stack or stack.pop() != c:
            return False
    return not stack and all(c not in closer for c in answer) and len(answer) > 0  # minimal completion


def check_sorting(task, prompt, answer, meta):
    return answer == [str(x) for x in sorted(int(t) for t in prompt[:-1])]


def check_grammar(task, prompt, answer, meta):
    """The agreement rule, by morphology: the head noun is the first noun of the sentence;
    a plural noun ends in -s, a singular present verb ends in -s."""
    nouns = {n for n in NOUNS} | {n + "s" for n in NOUNS}
    head = next(w for w in prompt if w in nouns)
    plural = head.endswith("s")
    verb, wrong = answer[0], meta["wrong"]
    return verb.endswith("s") != plural and wrong.endswith("s") == plural and wrong.rstrip("s") == verb.rstrip("s")


CHECKERS = {name: globals()[f"check_{name}"] for name in TASKS}


@pytest.mark.parametrize("name", TASKS)
def test_answers_are_right(name):
    task = make_task(name)
    items = task.held_out_items(200, seed=0) + [next(task.training_items(random.Random(i), 0)) for i in range(200)]
    for item in items:
        prompt = item["prompt"].split()
        assert prompt[0] == task.marker and item["task"] == name
        assert CHECKERS[name](task, prompt[1:], item["answer"].split(), item["metadata"]), item


@pytest.mark.parametrize("name", TASKS)
def test_held_out_items_are_never_trained_on(name):
    task = make_task(name)
    held_out = task.held_out_items(300, seed=0)
    assert len(held_out) >= 50 and len({task.key(i) for i in held_out}) == len(held_out)
    stream = task.training_items(random.Random(1), seed=0)
    trained = {task.key(next(stream)) for _ in range(5000)}
    assert not trained & {task.key(i) for i in held_out}
    assert all(task.is_held_out(i, seed=0) for i in held_out)


def test_modular_addition_trains_on_its_fraction_of_pairs():
    task = make_task("modular_addition", p=113, train_fraction=0.3)
    items = [task.item(f"{a} + {b} =", str((a + b) % 113)) for a in range(113) for b in range(113)]
    trained = sum(not task.is_held_out(i, seed=0) for i in items) / len(items)
    assert trained == pytest.approx(0.3, abs=0.02)


def test_induction_spans_recur_at_random_offsets_without_a_cue():
    task = make_task("induction")
    items = task.held_out_items(300, seed=0)
    assert all(len((i["prompt"] + " " + i["answer"] + " " + i["suffix"]).split()) == 1 + task.length for i in items)
    offsets = {i["metadata"]["copy_start"] - (i["prompt"].split()[1:-1].index(i["prompt"].split()[-1])) for i in items}
    assert len(offsets) > 20  # the distance back to the source varies: no fixed positional offset copies
    assert set(task.symbols()) == {task.marker} | {f"r{k}" for k in range(64)}  # no separator symbol


def test_grammar_has_attractors_in_both_directions():
    items = make_task("grammar").held_out_items(300, seed=0)
    attracted = [i for i in items if i["metadata"]["attractor"]]
    assert 0.05 < len(attracted) / len(items) < 0.8  # distinct prompts: long ones dominate
    assert {i["metadata"]["plural"] for i in attracted} == {True, False}


def test_unknown_task_and_bad_parameters_are_clear_errors():
    with pytest.raises(ValueError, match="unknown task 'parity'; available: induction"):
        make_task("parity")
    with pytest.raises(ValueError, match="dyck: need 1 <= n_types <= 4"):
        make_task("dyck", n_types=9)
