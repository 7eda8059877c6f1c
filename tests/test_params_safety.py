"""Issue 19: a parameter file is data, its names are names, and the runner writes only its own files.

Every case goes through the command line (``segkit report --params FILE [--check]``) on a tiny notebook, and checks
the exit code (2), the one-line message, and that every file in the folder is byte-identical afterwards (nothing
created, changed or deleted), with and without ``--check``: the run refuses what the check refuses, before it runs.
"""
from pathlib import Path

import nbformat
import pytest
from nbformat.v4 import new_code_cell, new_notebook

from segkit.cli import main

# a notebook that, were it ever run, would leave a file behind: a refused run must not get that far
TINY = new_notebook(cells=[new_code_cell('pipeline_params = None\nworkdir = ""\ngreeting = "hello"',
                                         metadata={"tags": ["parameters"]}),
                           new_code_cell('open("RAN", "w").write(greeting)')],
                    metadata={"kernelspec": {"name": "python3", "display_name": "Python 3", "language": "python"}})
PAYLOAD = 'import os; os.system("touch PWNED")'


def files(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.fixture
def report(tmp_path, capsys, monkeypatch):
    """``report(yaml_text, *options, name=...)`` -> the error line, after checking exit code 2 and that no file
    under tmp_path changed (a decoy outside the output folder included)."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "nbs").mkdir()
    nbformat.write(TINY, tmp_path / "nbs" / "tiny.ipynb")
    (tmp_path / "victim.json").write_text('{"mine": true}')  # a user's files beside the output folder
    (tmp_path / "victim2.ipynb").write_text("{}")

    def run(text: str, *options: str, name: str = "p.yaml") -> str:
        (tmp_path / name).write_text(text)
        before = files(tmp_path)
        code = main(["report", "--params", name, "--notebooks", "nbs", "--out", "out", "--workdir", "runs",
                     *options])
        err = capsys.readouterr().err.strip()
        # one line; --check lists its problems (one line each) under a first line that counts them
        assert code == 2 and err.startswith("segkit report: error: "), err
        assert len(err.splitlines()) == 1 or err.splitlines()[0].endswith("problem(s):"), err
        assert files(tmp_path) == before  # nothing written, nothing deleted (no RAN, no PWNED, no out/)
        return err[len("segkit report: error: "):]
    return run


def tiny(parameters: str = "{}", run: str = "tiny.ipynb") -> str:
    return f"parameters: {parameters}\nruns: [{run}]\n"


@pytest.mark.parametrize("check", [["--check"], []], ids=["check", "run"])
@pytest.mark.parametrize("value, message", [
    (f"!!binary {__import__('base64').b64encode(('1' + chr(10) + PAYLOAD).encode()).decode()}", "a binary value"),
    ("!!set {a: null}", "a set value"),
    (f"!!python/object/apply:os.system ['{PAYLOAD}']", "could not determine a constructor"),
    ("!!python/name:os.system", "could not determine a constructor"),
    ("2024-01-01", "a timestamp value"),
], ids=["binary", "set", "python-apply", "python-name", "date"])
def test_a_yaml_tag_is_refused_at_its_line_and_runs_nothing(report, tmp_path, check, value, message):
    err = report(f"runs: [tiny.ipynb]\nparameters:\n  greeting: {value}\n", *check)
    assert err.startswith("p.yaml:3: ") and message in err
    assert not (tmp_path / "PWNED").exists() and not (tmp_path / "nbs" / "PWNED").exists()


@pytest.mark.parametrize("fresh", [["--fresh"], []], ids=["fresh", "plain"])
@pytest.mark.parametrize("name", ["../victim", "../../victim2", "/tmp/victim", ".hidden", "..", "a/b", "a\\\\b"])
def test_a_run_name_that_is_a_path_is_refused(report, tmp_path, fresh, name):
    runs = tmp_path / "runs" / "p"  # a work folder the runner made, so that --fresh would delete
    runs.mkdir(parents=True)
    (runs / ".segkit-workdir").touch()
    err = report(f'runs:\n  - {{notebook: tiny.ipynb, name: "{name}"}}\n', *fresh)
    assert "is not a name: no path separators, '..' or leading dot" in err
    assert (tmp_path / "victim.json").read_text() == '{"mine": true}'


@pytest.mark.parametrize("text, message", [
    (tiny(run="../nbs/tiny.ipynb"), "notebook '../nbs/tiny.ipynb' is not a name"),
    ("make_data: {../outside.jsonl: {n: 3}}\n" + tiny(), "a relative path inside this folder"),
    ("make_data: {/tmp/outside.jsonl: {n: 3}}\n" + tiny(), "a relative path inside this folder"),
    (tiny("{workdir: /tmp/elsewhere}"), "'workdir' is set by segkit report"),
    (tiny("{pipeline_params: {n_train: 3}}"), "'pipeline_params' is set by segkit report"),
])
def test_the_file_cannot_name_where_the_runner_writes(report, text, message):
    assert message in report(text)


def test_a_parameter_file_whose_stem_is_hidden_is_refused(report):
    assert "the parameter file's stem '.p' is not a name" in report(tiny(), name=".p.yaml")


@pytest.mark.parametrize("text, message", [
    (tiny("{n_atribute: 3}"), "unknown name 'n_atribute' (did you mean 'n_attribute'?)"),
    (tiny("{greting: hi}"), "unknown name 'greting' (did you mean 'greeting'?)"),
    ("runs:\n  - {notebook: tiny.ipynb, parameters: {tua: 0.5}}\n", "run 'tiny': parameters: unknown name 'tua' "
                                                                    "(did you mean 'tau'?)"),
    ("runs:\n  - {notebook: tiny.ipynb, parameter: {tau: 0.5}}\n", "unknown key 'parameter' (did you mean "
                                                                   "'parameters'?)"),
    ("parameters: {}\nrun: [tiny.ipynb]\n", "expected a mapping with a non-empty list 'runs'"),
])
def test_an_unknown_name_is_an_error_naming_the_closest(report, text, message):
    assert message in report(text, "--check")


@pytest.mark.parametrize("params, message", [
    ('{tau: "0.7"}', "tau: expected a number, got a string '0.7'"),
    ("{n_train: 1e3}", "n_train: expected an integer, got a string '1e3'"),
    ("{n_train: 2.5}", "n_train: expected an integer, got a number 2.5"),
    ("{modes: full}", "modes: expected a list of strings, got a string 'full'"),
    ("{benchmarks: 3}", "benchmarks: expected a list of strings or null, got a number 3"),
    ("{seeds: [0, true]}", "seeds[1]: expected an integer, got true"),
    ("{train: {epochs: '3'}}", "train.epochs: expected a number, got a string '3'"),
    ("{tau: .nan}", "tau: expected a number, got nan (not a finite number)"),
    ("{greeting: [1, 2]}", "greeting: expected a string, got a list"),  # the notebook's own name: its default's type
])
def test_a_value_of_the_wrong_type_is_refused(report, params, message):
    assert message in report(tiny(params), "--check")


@pytest.mark.parametrize("params, message", [
    ("{tau: 0}", "tau must be in (0, 1], got 0"),
    ("{tau: 1.5}", "tau must be in (0, 1], got 1.5"),
    ("{beta: -0.1}", "beta: must not be negative"),
    ("{n_eval: -1}", "n_eval: must not be negative, got -1"),
    ("{n_train: 0}", "n_train must be at least 1, got 0"),
    ("{n_train: 8, n_attribute: 9}", "n_attribute (9) must be at most n_train (8)"),
    ("{seeds: []}", "seeds must be distinct, at least one"),
    ("{base_seeds: [0, 0]}", "base_seeds must be distinct"),
    ("{train_data: t.jsonl}", "train_data is given but base_model is not"),
    ("{benchmarks: [b.jsonl], samples: {bb: 4}}", "samples: 'bb' is no benchmark's file stem (did you mean 'b'?)"),
    # an unknown mode or a bad stage option
    ("{modes: [full, selectiv]}", "modes: unknown mode 'selectiv' (did you mean 'selective'?)"),
    ("{device: gpu}", "device: unknown device 'gpu'"),
    ("{train: {epoch: 3}}", "train: ['epoch'] are not TrainConfig options the pipeline passes on (did you mean "
                            "'epochs'?)"),
    ("{generate: {engine: vlm}}", "generate.engine: 'vlm' is not one of hf, vllm"),
    ("{attribute: {method: pap}}", "attribute.method: 'pap' is not one of adaptive, paper"),
    ("{generate: {out: x.jsonl}}", "generate: ['out'] are not EvalConfig options the pipeline passes on"),
    ("{variants: {v: {restate: 0}}}", "variants['v']: ['restate'] are not SynthConfig options"),
    ("{base_train: {lr: fast}}", "base_train.lr: expected a number, got a string 'fast'"),
    # a stage option's range, over the stage's defaults: refused here, not when the step builds its config after
    # the base models have trained
    ("{attribute: {steps: 0}}", "attribute: steps must be an integer >= 1 for adaptive, got 0"),
    ("{attribute: {max_steps: 8}}", "attribute: max_steps (8) must be >= steps (15)"),
    ("{attribute: {method: riemann_left, steps: 1}}", "attribute: steps must be an integer >= 2 for riemann_left"),
    ("{attribute: {trace_batch: 0}}", "attribute: trace_batch must be an integer >= 1"),
    ("{attribute: {answer_template: x}}", "attribute: answer template 'x' has no ANSWER placeholder"),
    ("{train: {epochs: 0}}", "train: --epochs and --lr must be above 0, got 0 and 0.003"),
    ("{train: {batch_size: 0}}", "train: --batch-size must be at least 1, got 0"),
    ("{train: {warmup_ratio: 1}}", "train: --warmup-ratio and --lora-dropout must lie in [0, 1)"),
    ("{base_train: {lr: 0}}", "base_train: --epochs and --lr must be above 0, got 3.0 and 0"),
    ("{generate: {top_p: 0}}", "generate: --temperature must be >= 0 and --top-p in (0, 1], got 0.0, 0"),
    ("{generate: {max_new_tokens: 0}}", "generate: --n, --batch-size, --tensor-parallel-size and --max-new-tokens"),
    ("{generate: {gpu_memory_utilization: 2}}", "generate: --gpu-memory-utilization is a share in (0, 1]"),
    # options the pipeline sets itself: a skipped trace never reaches OUT, so the attribution step would rerun forever
    ("{attribute: {on_error: skip}}", "attribute: ['on_error'] are not AttributeConfig options the pipeline passes "
                                      "on; known:"),
    ("{attribute: {unique_ids: suffix}}", "attribute: ['unique_ids'] are not AttributeConfig options"),
])
def test_a_value_out_of_range_counts_that_cannot_work_together_or_a_bad_option_are_refused(report, params, message):
    assert message in report(tiny(params), "--check")


@pytest.mark.parametrize("check", [["--check"], []], ids=["check", "run"])
@pytest.mark.parametrize("train, bench, message", [
    ('{"question": "q", "answer": "1"}', '{"id": 1, "question": "q", "answer": "1"}',
     "t.jsonl:1: missing field 'solution'"),
    ('{"question": "q", "solution": "s", "answer": null}', '{"id": 1, "question": "q", "answer": "1"}',
     "t.jsonl:1: field 'answer': expected a non-empty string or number, got null"),
    ('{"question": "q", "solution": "s", "answer": "1"}', '{"id": 1, "question": "q"}',
     "b.jsonl:1: need a question ('problem' or 'question') and a gold answer"),
    ("", '{"id": 1, "question": "q", "answer": "1"}', "t.jsonl: no records in the file"),
])
def test_data_files_are_read_for_the_fields_the_run_needs(report, tmp_path, check, train, bench, message):
    (tmp_path / "t.jsonl").write_text(train + "\n")
    (tmp_path / "b.jsonl").write_text(bench + "\n")
    assert message in report(tiny("{train_data: t.jsonl, benchmarks: [b.jsonl], base_model: scratch}"), *check)


@pytest.mark.parametrize("text, where, message", [
    ("parameters: {n_train: 3\nruns: [tiny.ipynb]\n", "p.yaml:2: ", "expected ',' or '}'"),
    ("parameters:\n  n_train: 3\n   n_test: 4\nruns: [tiny.ipynb]\n", "p.yaml:3: ", "mapping values are not allowed"),
    ("parameters:\n  n_train: 3\n  n_train: 4\nruns: [tiny.ipynb]\n", "p.yaml:3: ", "'n_train' is given twice"),
    ("runs: [tiny.ipynb]\n\tparameters: {}\n", "p.yaml:2: ", "found character '\\t'"),
    ("a: &a [1, 1, 1]\nb: &b [*a, *a, *a]\nruns: [tiny.ipynb]\n", "p.yaml:2: ", "an alias (*a) is not a parameter"),
    ("runs: [tiny.ipynb]\nruns: [tiny.ipynb]\n", "p.yaml:2: ", "'runs' is given twice (also at line 1)"),
])
def test_a_yaml_error_is_one_line_with_file_and_line(report, text, where, message):
    err = report(text)
    assert err.startswith(where) and message in err


def test_fresh_deletes_only_outputs_beside_a_notebook_the_runner_executed(tmp_path, monkeypatch, capsys):
    """A user's ``out/tiny.ipynb`` where the run's notebook goes stops the run, untouched; a user's
    ``out/tiny.json`` that is no file of the run's survives ``--fresh``; the run then executes."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "nbs").mkdir()
    nbformat.write(TINY, tmp_path / "nbs" / "tiny.ipynb")
    (tmp_path / "p.yaml").write_text(tiny())
    (tmp_path / "runs" / "p").mkdir(parents=True)
    (tmp_path / "runs" / "p" / ".segkit-workdir").touch()
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "tiny.json").write_text("a user's file")
    (tmp_path / "out" / "tiny.ipynb").write_text("not a notebook the runner wrote")
    argv = ["report", "--params", "p.yaml", "--notebooks", "nbs", "--out", "out", "--workdir", "runs", "--fresh"]
    # the user's tiny.ipynb is in the way of the run's own: refused before anything runs, both files kept
    assert main(argv) == 2 and "out/tiny.ipynb was not written by segkit report" in capsys.readouterr().err
    assert (tmp_path / "out" / "tiny.ipynb").read_text() == "not a notebook the runner wrote"
    assert (tmp_path / "runs" / "p" / ".segkit-workdir").exists() and not (tmp_path / "nbs" / "RAN").exists()
    (tmp_path / "out" / "tiny.ipynb").unlink()
    assert main(argv) == 0, capsys.readouterr().err  # tiny.json is no file of this run's (no headline_file)
    assert (tmp_path / "out" / "tiny.json").read_text() == "a user's file"
    assert (tmp_path / "nbs" / "RAN").read_text() == "hello"
    assert main(argv) == 0  # now the notebook is the runner's: --fresh deletes its outputs and runs again
    assert (tmp_path / "out" / "tiny.json").read_text() == "a user's file"  # not this run's (no headline_file)
