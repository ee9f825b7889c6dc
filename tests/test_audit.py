"""The human audit: `ieiw audit sample` draws a stratified sample of a real (small) build, two people label it
through the real labelling server over HTTP (127.0.0.1; a wrong Host, a missing or wrong token and a form POST
are refused), and `ieiw audit report` gives the figures a hand computation gives from those labels: weighted
shares with the strata's N/n weights, Wilson intervals on Kish's effective n."""

from __future__ import annotations

import hashlib
import http.client
import json
import math
import threading
from pathlib import Path

import pytest
from ieiw_testing import run_ieiw

from ieiw import stages
from ieiw.audit.metrics import wilson
from ieiw.audit.server import make_server
from ieiw.schemas.config import load_config

Z = 1.959963984540054


@pytest.fixture(scope="module")
def built(tmp_path_factory, sample_root) -> Path:
    from ieiw_testing import run_stages, write_config

    out = tmp_path_factory.mktemp("audit") / "out"
    path = write_config(out.parent / "build.yaml", sample_root, out, unit_size=8,
                        selection={"min_target_aesthetic": {"quantile": 0.3}, "max_aesthetic_gap": 0.6})
    build, _, _ = run_stages(path)
    stages.finish(build)
    return out


def request(port: int, method: str, path: str, body: bytes | None = None, headers: dict | None = None):
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    conn.putrequest(method, path, skip_host=True, skip_accept_encoding=True)
    for key, value in (headers or {}).items():
        conn.putheader(key, value)
    if body is not None:
        conn.putheader("Content-Length", str(len(body)))
    conn.endheaders(body)
    answer = conn.getresponse()
    data = answer.read()
    conn.close()
    return answer.status, answer.getheader("Content-Type"), data


def serve(out: Path):
    server = make_server(out)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    return server


def label_of(pair_id: str, kept: bool) -> str:
    """A fixed labelling: a kept pair is bad one time in four, a rejected one good one time in three."""
    h = int(hashlib.sha256(pair_id.encode()).hexdigest(), 16)
    return ("bad" if h % 4 == 0 else "good") if kept else ("good" if h % 3 == 0 else "bad")


def share(pairs):
    """Hand computation: weighted share, Kish n_eff, Wilson 95 %."""
    if not pairs:
        return None
    total = sum(w for w, _ in pairs)
    p = sum(w for w, y in pairs if y) / total
    n = total ** 2 / sum(w * w for w, _ in pairs)
    centre = (p + Z * Z / (2 * n)) / (1 + Z * Z / n)
    half = Z * math.sqrt(p * (1 - p) / n + Z * Z / (4 * n * n)) / (1 + Z * Z / n)
    return {"value": p, "low": max(0, centre - half), "high": min(1, centre + half), "labels": len(pairs)}


def test_wilson_matches_the_textbook():
    low, high = wilson(0.8, 10)
    assert (round(low, 4), round(high, 4)) == (0.4902, 0.9433)
    assert wilson(0.0, 0) == (0.0, 1.0)


def test_label_through_the_page_and_report_what_a_hand_computation_gives(built: Path):
    assert "(none: no human audit of this build was reported" in (built / "README.md").read_text()
    assert "No human audit of this build was reported" in (built / "report.html").read_text()
    run_ieiw("audit", "sample", built, "--per-stratum", "4", "--near-per-stratum", "6", "--seed", "3")
    again = run_ieiw("audit", "sample", built, check=False)
    assert again.returncode == 2 and "--force" in again.stderr, "an existing sample is kept"
    sample = json.loads((built / "audit" / "sample.json").read_text())
    items = sample["items"]
    assert {it["kept"] for it in items} == {True, False}, "kept and rejected pairs are both sampled"
    assert any(it["stratum"].startswith("near:") for it in items) and any(it["weight"] > 1 for it in items)
    for task, strata in sample["strata"].items():  # the weights undo the sampling: they add up to each stratum
        for stratum, size in strata.items():
            got = sum(it["weight"] for it in items if it["task"] == task and it["stratum"] == stratum)
            assert got == pytest.approx(size)

    server = serve(built)
    port, token = server.server_address[1], server.token
    host = {"Host": f"127.0.0.1:{port}"}
    try:
        status, kind, page = request(port, "GET", f"/?token={token}&labeller=alice", headers=host)
        assert status == 200 and kind.startswith("text/html") and b"ieiw audit" in page
        assert request(port, "GET", f"/api/state?token={token}&labeller=alice", headers={"Host": "evil.example"})[0] == 421
        assert request(port, "GET", f"/api/state?token={token}&labeller=alice",
                       headers={"Host": f"evil.example:{port}"})[0] == 421
        assert request(port, "GET", "/api/state?token=wrong&labeller=alice", headers=host)[0] == 403
        assert request(port, "GET", "/api/state?labeller=alice", headers=host)[0] == 403
        assert request(port, "GET", "/api/image?item=0&side=source", headers=host)[0] == 403
        status, _, body = request(port, "GET", f"/api/state?token={token}&labeller=alice", headers=host)
        state = json.loads(body)
        assert status == 200 and [it["id"] for it in state["items"]] == [it["id"] for it in items]
        assert "kept" not in state["items"][0] and "reason" not in state["items"][0], "the labeller labels blind"
        status, kind, image = request(port, "GET", f"/api/image?item=0&side=target&token={token}", headers=host)
        assert status == 200 and kind.startswith("image/") and len(image) > 100
        form = b"labeller=alice&id=x&label=good"
        assert request(port, "POST", f"/api/label?token={token}", form,
                       {**host, "Content-Type": "application/x-www-form-urlencoded"})[0] == 415
        post = {**host, "Content-Type": "application/json"}
        first = json.dumps({"labeller": "alice", "id": items[0]["id"], "label": "good"}).encode()
        assert request(port, "POST", "/api/label?token=wrong", first, post)[0] == 403
        assert request(port, "POST", f"/api/label?token={token}", first, {**post, "Host": "evil.example"})[0] == 421
        bad = json.dumps({"labeller": "alice", "id": items[0]["id"], "label": "maybe"}).encode()
        assert request(port, "POST", f"/api/label?token={token}", bad, post)[0] == 400
        expected_labels: dict[str, dict[str, str]] = {"alice": {}, "bob": {}}
        for it in items:
            label = label_of(it["id"], it["kept"])
            body = {"labeller": "alice", "id": it["id"], "label": label,
                    "reason": "artefacts" if label == "bad" else None}
            status, _, answer = request(port, "POST", f"/api/label?token={token}", json.dumps(body).encode(), post)
            assert status == 200 and json.loads(answer)["label"]["label"] == label
            expected_labels["alice"][it["id"]] = label
    finally:
        server.shutdown()
        server.server_close()

    # resumable: a new server (a new token) serves alice's marks back; bob labels four, disagreeing once
    server = serve(built)
    port, token = server.server_address[1], server.token
    host = {"Host": f"localhost:{port}"}
    post = {**host, "Content-Type": "application/json"}
    try:
        state = json.loads(request(port, "GET", f"/api/state?token={token}&labeller=alice", headers=host)[2])
        assert {k: v["label"] for k, v in state["labels"].items()} == expected_labels["alice"]
        for index, it in enumerate(items[:4]):
            label = expected_labels["alice"][it["id"]]
            if index == 0:
                label = "bad" if label == "good" else "good"
            body = {"labeller": "bob", "id": it["id"], "label": label}
            assert request(port, "POST", f"/api/label?token={token}", json.dumps(body).encode(), post)[0] == 200
            expected_labels["bob"][it["id"]] = label
    finally:
        server.shutdown()
        server.server_close()

    report = json.loads(run_ieiw("audit", "report", built, "--json", "--target-precision", "0.8").stdout)
    assert report["labellers"] == ["alice", "bob"] and report["disputed"] == 1
    assert report["labels"] == len(items) + 4
    verdict = {it["id"]: expected_labels["alice"][it["id"]] == "good" for it in items[1:]}  # items[0]: a tie
    assert report["labelled"] == len(verdict)
    checked = 0
    for task, figures in report["tasks"].items():
        mine = [it for it in items if it["task"] == task and it["id"] in verdict]
        bad = [it for it in mine if not verdict[it["id"]]]
        hand = {"kept_precision": share([(it["weight"], verdict[it["id"]]) for it in mine if it["kept"]]),
                "rejected_bad_share": share([(it["weight"], not verdict[it["id"]]) for it in mine if not it["kept"]]),
                "recall": share([(it["weight"], not it["kept"]) for it in bad])}
        for name, expected in hand.items():
            got = figures[name]
            if expected is None:
                assert got is None
                continue
            assert got["labels"] == expected["labels"]
            for key in ("value", "low", "high"):
                assert got[key] == pytest.approx(expected[key], abs=1e-9), (task, name, key)
            checked += 1
        for rule, entry in figures["rules"].items():
            fired = [it for it in mine if it["fires"].get(rule)]
            expected = share([(it["weight"], not verdict[it["id"]]) for it in fired])
            if expected is not None:
                assert entry["precision"]["value"] == pytest.approx(expected["value"])
                assert entry["precision"]["low"] == pytest.approx(expected["low"])
                checked += 1
            expected = share([(it["weight"], bool(it["fires"].get(rule))) for it in bad])
            if expected is not None:
                assert entry["recall"]["value"] == pytest.approx(expected["value"])
                assert entry["recall"]["high"] == pytest.approx(expected["high"])
                checked += 1
            if entry.get("suggested"):
                s = entry["suggested"]
                assert s["value"] >= 0.8 and s["labels"] >= 5
    assert checked >= 6
    text = run_ieiw("audit", "report", built, "--target-precision", "0.8").stdout
    assert "kept precision" in text and "Wilson" in text

    # stats.json, the card and the HTML report show the figures with their label counts
    stats = json.loads((built / "stats.json").read_text())
    assert stats["audit"]["tasks"] == report["tasks"] and stats["audit"]["stale"] is False
    card = (built / "README.md").read_text()
    page = (built / "report.html").read_text()
    assert "## Audit" in card and "<h2 id='audit'>Audit</h2>" in page
    for task, figures in report["tasks"].items():
        kept = figures["kept_precision"]
        if kept:
            shown = f"{kept['value']:.2f} [{kept['low']:.2f}, {kept['high']:.2f}] | {kept['labels']} |"
            assert f"| {task} | {shown}" in card
            assert f"<td>{kept['value']:.3f} [{kept['low']:.3f}, {kept['high']:.3f}]</td><td>{kept['labels']}</td>" in page
        for rule, entry in figures["rules"].items():
            if entry["precision"]:
                assert f"| {task} | `{rule}` | {entry['precision']['value']:.2f} [" in card
    assert f"{report['labelled']} sampled pairs" in card and f"({report['labels']} labels" in page
    assert "kept precision" in run_ieiw("stats", built / "ieiw").stdout


def test_the_command_serves_the_page_at_the_address_it_prints(built: Path):
    """`ieiw audit serve` (the real command) prints a URL with its token; that URL answers, a wrong token does not."""
    import re
    import subprocess
    import sys

    from ieiw_testing import REPO, ieiw_env

    if not (built / "audit" / "sample.json").exists():
        run_ieiw("audit", "sample", built, "--per-stratum", "2", "--near-per-stratum", "2")
    assert run_ieiw("audit", "serve", built, "--port", "0", check=False).returncode == 2, "a labeller is needed"
    proc = subprocess.Popen([sys.executable, "-m", "ieiw", "audit", "serve", str(built), "--labeller", "carol",
                             "--port", "0"], cwd=REPO, env=ieiw_env(), stderr=subprocess.PIPE, text=True)
    try:
        line = proc.stderr.readline()
        found = re.search(r"http://127\.0\.0\.1:(\d+)/\?token=([\w-]+)&labeller=carol", line)
        assert found, line
        port, token = int(found.group(1)), found.group(2)
        host = {"Host": f"127.0.0.1:{port}"}
        assert request(port, "GET", f"/?token={token}&labeller=carol", headers=host)[0] == 200
        assert request(port, "GET", f"/api/state?token={token}&labeller=carol", headers=host)[0] == 200
        assert request(port, "GET", f"/api/state?token={token}x&labeller=carol", headers=host)[0] == 403
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def test_the_audit_is_marked_stale_once_selection_changes(built: Path):
    import yaml

    if not (built / "audit" / "report.json").exists():
        run_ieiw("audit", "sample", built, "--force")
        run_ieiw("audit", "report", built)
    assert json.loads((built / "stats.json").read_text())["audit"]["stale"] is False
    config = yaml.safe_load((built.parent / "build.yaml").read_text())
    config["selection"]["max_aesthetic_gap"] = 0.9
    (built.parent / "stricter.yaml").write_text(yaml.safe_dump(config))
    build = stages.build_for(load_config(built.parent / "stricter.yaml"))
    units = stages.finished_units(build)
    stages.calibrate_build(build, units)
    for unit in units:
        stages.select_unit(build, unit)
    stats, _ = stages.finish(build)
    assert stats["audit"]["stale"] is True
    assert "Stale" in (built / "README.md").read_text() and "Stale" in (built / "report.html").read_text()
