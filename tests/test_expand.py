"""`ieiw instructions expand`: paraphrases from a tiny random Qwen2 chat model (the real classes, built
offline; tests/tiny_lms.py), validated, written as a template file builders read, resumable after a kill.

A random model writes noise, so where a test needs particular answers a logits processor on the real
model steers it (tests/tiny_lms.Steer); the HTTP path is a loopback server answering with the same model."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from ieiw_testing import REPO, ieiw_env, run_ieiw
from tiny_lms import Steer, build_tiny_chat_lm, serve_openai

from ieiw.backends.lm.base import LanguageModelSettings
from ieiw.backends.lm.connect import connect
from ieiw.builders.expand import (
    DUPLICATE,
    PLACEHOLDER_ADDED,
    PLACEHOLDER_DROPPED,
    SELF_CHECK_NO,
    ExpandSettings,
    check_paraphrase,
    expand,
    journal_path,
    load_seeds,
    normalise,
    rule_check,
)
from ieiw.builders.instructions import RULES, load_templates

SEED = "Remove {the_phrase}."
# what the steered model writes for SEED, row by row (n=5)
WRITES = ["Take {the_phrase} away from the picture.", "Remove {the_phrase} and {a_phrase}.", "Remove the object.",
          "remove {the_phrase}", "Erase {the_phrase} completely."]
SAYS_NO = "Erase {the_phrase} completely."


@pytest.fixture(scope="module")
def lm_folder(tmp_path_factory) -> Path:
    return build_tiny_chat_lm(tmp_path_factory.mktemp("tiny-lm") / "qwen2-tiny")


def steered(folder: Path):
    settings = LanguageModelSettings(model=str(folder), device="cpu")
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(folder, local_files_only=True)

    def want(prompt: str, row: int) -> str | None:
        if "Answer yes or no" in prompt:
            return "no" if f"B: {SAYS_NO}" in prompt else "yes"
        if f"Instruction: {SEED}" in prompt:
            return WRITES[row]
        return None  # other seeds: the random model's own noise

    steer = Steer(tokenizer, want)
    return settings, connect(settings, logits_processors=[steer])


def test_placeholder_dropped_added_and_duplicate_are_named():
    check, settings = rule_check("remove", RULES["remove"]), ExpandSettings()
    seen = {normalise(SEED)}
    assert check_paraphrase(SEED, "Remove the object from the photo.", check, settings, seen) == PLACEHOLDER_DROPPED
    assert check_paraphrase(SEED, "Remove {the_phrase} and {a_phrase}.", check, settings, seen) == PLACEHOLDER_ADDED
    assert check_paraphrase(SEED, "  remove {the_phrase}!", check, settings, seen) == DUPLICATE
    assert check_paraphrase(SEED, "{The_phrase} must go; take {the_phrase} out.", check, settings, seen) is None


def test_self_check_no_rejects_a_paraphrase(lm_folder, tmp_path):
    _, model = steered(lm_folder)
    out = expand(model, {"remove": (SEED,)}, RULES, tmp_path / "p.yaml", ExpandSettings(n=5, max_new_tokens=48))
    journal = [yaml.safe_load(line) for line in journal_path(out.path).read_text().splitlines()[1:]]
    rejected = {text: reason for text, reason in journal[0]["rejected"]}
    assert rejected[SAYS_NO] == SELF_CHECK_NO
    assert rejected["Remove {the_phrase} and {a_phrase}."] == PLACEHOLDER_ADDED
    assert rejected["Remove the object."] == PLACEHOLDER_DROPPED
    assert rejected["remove {the_phrase}"] == DUPLICATE
    assert out.lists["remove"] == [SEED, "Take {the_phrase} away from the picture."]


def test_expanded_file_loads_in_builders_and_names_its_provenance(lm_folder, tmp_path):
    _, model = steered(lm_folder)
    seeds, rules, source = load_seeds("instructions")
    seeds = {"remove": (SEED,) + seeds["remove"][1:3], "add": seeds["add"], "replace": seeds["replace"]}
    out = expand(model, seeds, rules, tmp_path / "expanded.yaml", ExpandSettings(n=5, max_new_tokens=48, kinds=("remove",)),
                 source)
    templates = load_templates(out.path)  # what removal.templates / replacement.templates read
    assert "Take {the_phrase} away from the picture." in templates.remove
    assert templates.add == seeds["add"], "kinds not expanded are copied"
    provenance = yaml.safe_load(out.path.read_text())["provenance"]
    assert provenance["model"] == str(lm_folder) and provenance["revision"].startswith("sha256:")
    assert provenance["seed"] == 0 and provenance["date"] and "Instruction: {seed}" in provenance["prompt"]
    assert provenance["counts"]["remove"]["rejected"][SELF_CHECK_NO] == 1


def test_http_endpoint_answers_like_the_local_model(lm_folder, tmp_path, monkeypatch):
    """The OpenAI-compatible path against a loopback server answering with the (steered) tiny model."""
    _, local = steered(lm_folder)
    server, url = serve_openai(local)
    try:
        monkeypatch.setenv("TINY_KEY", "test-key")
        remote = connect(LanguageModelSettings(model="qwen2-tiny", endpoint=url, api_key_env="TINY_KEY"))
        settings = ExpandSettings(n=5, max_new_tokens=48)
        via_http = expand(remote, {"remove": (SEED,)}, RULES, tmp_path / "http.yaml", settings)
        direct = expand(local, {"remove": (SEED,)}, RULES, tmp_path / "local.yaml", settings)
        assert via_http.lists == direct.lists == {"remove": [SEED, "Take {the_phrase} away from the picture."]}
        assert yaml.safe_load(via_http.path.read_text())["provenance"]["endpoint"] == url
        monkeypatch.setenv("TINY_KEY", "wrong")
        with pytest.raises(Exception, match="HTTP 401"):
            connect(LanguageModelSettings(model="m", endpoint=url, api_key_env="TINY_KEY")).chat(
                [[{"role": "user", "content": "hi"}]])
    finally:
        server.shutdown()


def test_cli_writes_a_valid_file_and_resumes_after_a_kill(lm_folder, tmp_path):
    args = ["instructions", "expand", "--model", lm_folder, "--n", "2", "--max-new-tokens", "16", "--device", "cpu",
            "--kinds", "remove", "add"]
    whole = tmp_path / "whole.yaml"
    run_ieiw(*args, "--out", whole)
    killed = tmp_path / "killed.yaml"
    proc = subprocess.Popen([sys.executable, "-m", "ieiw", *map(str, args), "--out", str(killed)], cwd=REPO,
                            env=ieiw_env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    journal = journal_path(killed)
    deadline = time.time() + 120
    while time.time() < deadline and (not journal.exists() or len(journal.read_text().splitlines()) < 4):
        time.sleep(0.05)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert not killed.exists(), "killed before the end: no paraphrase file yet"
    done = len(journal.read_text().splitlines()) - 1
    assert 3 <= done < 32
    rerun = run_ieiw(*args, "--out", killed)
    assert f"{done} seeds resumed" in rerun.stdout or f"{done + 1} seeds resumed" in rerun.stdout
    first, second = yaml.safe_load(whole.read_text()), yaml.safe_load(killed.read_text())
    assert {k: v for k, v in first.items() if k != "provenance"} == {k: v for k, v in second.items() if k != "provenance"}
    assert first["provenance"]["counts"] == second["provenance"]["counts"]
    load_templates(killed)
    other = run_ieiw(*[a if a != "2" else "3" for a in args], "--out", killed, check=False)
    assert other.returncode == 2 and "--restart" in other.stderr, "a journal of other settings is not mixed in"


def test_build_with_expanded_templates_keeps_ids_and_reruns_only_affected_units(make_config, tmp_path):
    import json

    import pyarrow.parquet as pq

    from ieiw import stages
    from ieiw.builders.expand import write_paraphrase_file
    from ieiw.schemas.config import load_config

    seeds, _, _ = load_seeds("instructions")
    file = tmp_path / "expanded.yaml"
    lists = {k: list(v) for k, v in seeds.items()}
    lists["remove"].append("Take {the_phrase} away from the picture.")
    write_paraphrase_file(file, lists, {"model": "test", "seed": 0})

    def build():
        path = make_config(unit_size=8, removal={"templates": str(file)})
        data = yaml.safe_load(path.read_text())
        data["removal"]["source"]["splits"] = ["val"]
        path.write_text(yaml.safe_dump(data))
        stages._builds.clear()  # a new run: a new process would read the file afresh
        b = stages.build_for(load_config(path))
        b.prepare()
        outcomes = [stages.make_candidates(b, name, unit) for name, unit in b.plan()]
        rows = [r for o in outcomes for r in pq.read_table(tmp_path / "out" / "candidates" / f"{o.unit}.parquet",
                                                           columns=["id", "builder"]).to_pylist()]
        return [o.skipped for o in outcomes], rows

    skipped, first = build()
    assert not any(skipped)
    assert json.loads(first[0]["builder"]["params"])["templates"]["file"] == str(file), "rows name their template file"
    skipped, again = build()
    assert all(skipped) and [r["id"] for r in again] == [r["id"] for r in first]
    lists["replace"].append("Swap out {the_source} and put in {a_target}.")  # a list removal does not use
    write_paraphrase_file(file, lists, {"model": "test", "seed": 1})
    assert all(build()[0]), "removal's units are not redone for a replace-only change"
    lists["remove"].append("Make {the_phrase} vanish from the photo.")
    write_paraphrase_file(file, lists, {"model": "test", "seed": 2})
    skipped, changed = build()
    assert not any(skipped) and [r["id"] for r in changed] == [r["id"] for r in first], "ids stay; instructions may not"
