"""The vlm-judge scorer: a tiny random LLaVA (the real classes: CLIP vision tower + Qwen2 text model through
AutoProcessor / AutoModelForImageTextToText, built offline; tests/tiny_lms.py) scores every pair through
the build's stages; its answers are held to the rubric's form, so a random model's numbers are parseable
and still its own. A threshold on them moves rows to rejected/ with a named reason, and a new threshold
re-decides with the stored scores only."""

from __future__ import annotations

from pathlib import Path

import pyarrow.parquet as pq
import pytest
import yaml
from ieiw_testing import run_stages
from tiny_lms import build_tiny_vlm, serve_openai

from ieiw.backends.lm.connect import connect
from ieiw.filters.selection import JUDGE_INSTRUCTION_LOW
from ieiw.filters.vlm_judge import RUBRIC, VlmJudgeConfig, parse_answer


@pytest.fixture(scope="module")
def vlm_folder(tmp_path_factory) -> Path:
    return build_tiny_vlm(tmp_path_factory.mktemp("tiny-vlm") / "llava-tiny")


def config(make_config, judge: dict, selection: dict, out: Path) -> Path:
    path = make_config(out=out, unit_size=8, selection={"min_target_aesthetic": None, "max_aesthetic_gap": None,
                                                        **selection},
                       scoring={"scorers": [{"backend": "proxy"}, {"backend": "vlm-judge", "image_size": 64,
                                                                   "device": "cpu", "batch_size": 4, **judge}]})
    data = yaml.safe_load(path.read_text())
    data["removal"]["source"]["splits"] = ["val"]
    path.write_text(yaml.safe_dump(data))
    return path


def test_parse_answer_is_lenient():
    assert parse_answer("Instruction following: 8/10\n**Preservation**: 4\nrealism = 10\nReason: ok") == {
        "instruction": 0.8, "preservation": 0.4, "realism": 1.0, "reason": "ok"}
    assert parse_answer("instruction: 12\nnoise")["instruction"] is None


def test_judge_fills_its_column_and_a_threshold_rejects_with_a_named_reason(vlm_folder, make_config, tmp_path):
    path = config(make_config, {"model": str(vlm_folder)}, {"min_judge_instruction": {"quantile": 0.5}}, tmp_path / "out")
    _, keys, _ = run_stages(path)
    scores = pq.read_table(tmp_path / "out" / "scores" / f"{keys[0]}.parquet").to_pylist()
    judged = [row["judge"] for row in scores]
    assert all(j["rubric"] == RUBRIC and j["backend"].startswith("vlm-judge-v1:") for j in judged)
    assert all(j["answer"].startswith("instruction: ") for j in judged), "held to the rubric's form"
    values = [j["instruction"] for j in judged]
    assert all(v is not None and 0 <= v <= 1 for v in values)
    assert parse_answer(judged[0]["answer"])["instruction"] == pytest.approx(values[0])
    rejected = [r for k in keys for r in pq.read_table(tmp_path / "out" / "rejected" / f"{k}.parquet").to_pylist()]
    reasons = {r["reason"] for r in rejected}
    if len(set(values)) > 1 or len(keys) > 1:
        assert JUDGE_INSTRUCTION_LOW in reasons
    # the report shows the judge, its histograms and, beside the pairs its rule rejected, its reasoning;
    # the card names it with the number of kept rows it scored
    from ieiw.card import write_card
    from ieiw.report import write_report

    page = write_report(tmp_path / "out").read_text()
    backend = judged[0]["backend"]
    assert "VLM judge:" in page and backend in page and "judge: instruction followed" in page
    if JUDGE_INSTRUCTION_LOW in reasons:
        assert "class='reasoning'>judge: instruction: " in page
    card = write_card(tmp_path / "out").read_text()
    kept_ids = {i for k in keys for i in pq.read_table(tmp_path / "out" / "ieiw" / f"{k}.parquet", columns=["id"])["id"].to_pylist()}
    assert f"| `{backend}` | `{RUBRIC}` | {len(kept_ids)} |" in card
    # re-decide with a new threshold: scoring is not redone (same fingerprint), selection is
    stricter = config(make_config, {"model": str(vlm_folder)}, {"min_judge_instruction": 1.01}, tmp_path / "out")
    _, _, outcomes = run_stages(stricter)
    assert all(o.skipped for o in outcomes.values()), "a threshold change re-runs selection only"
    kept = sum(pq.read_metadata(tmp_path / "out" / "ieiw" / f"{k}.parquet").num_rows for k in keys)
    again = [r for k in keys for r in pq.read_table(tmp_path / "out" / "rejected" / f"{k}.parquet").to_pylist()]
    assert kept == 0 and {r["reason"] for r in again} - {"object_still_visible"} <= {JUDGE_INSTRUCTION_LOW}


def test_judge_over_http_matches_the_local_model(vlm_folder, make_config, tmp_path, monkeypatch):
    local = connect(VlmJudgeConfig(model=str(vlm_folder), device="cpu"), vision=True)
    server, url = serve_openai(local)
    try:
        monkeypatch.setenv("JUDGE_KEY", "test-key")
        _, keys, _ = run_stages(config(make_config, {"model": "llava-tiny", "endpoint": url, "api_key_env": "JUDGE_KEY"}, {},
                                tmp_path / "http"))
        run_stages(config(make_config, {"model": str(vlm_folder)}, {}, tmp_path / "local"))
        for key in keys:
            remote = [r["judge"] for r in pq.read_table(tmp_path / "http" / "scores" / f"{key}.parquet").to_pylist()]
            direct = [r["judge"] for r in pq.read_table(tmp_path / "local" / "scores" / f"{key}.parquet").to_pylist()]
            assert [r["answer"] for r in remote] == [d["answer"] for d in direct]
    finally:
        server.shutdown()
