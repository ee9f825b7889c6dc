"""``ieiw align-pick``: the benchmark format, candidates from a tiny exported pipeline, the picking page in
headless Chromium (picks by click and key survive a reload and become shards the trainer reads), at most 2
picks a prompt, and no request reaching outside the work folder."""

from __future__ import annotations

import http.client
import json
import shutil
import threading
import time
from pathlib import Path

import pytest
from PIL import Image

from trainkit import draw_pair
from ieiw.training.align_pick import AlignError, PickStore, make_server, prepare, read_benchmark
from ieiw.training.cli import align_pick_main
from ieiw.training.data import ShardPairs, index_shards

INSTALL = "install it: `apt-get update && apt-get install -y chromium` and `pip install playwright`"


def chromium_path() -> str:
    found = shutil.which("chromium") or ("/usr/bin/chromium" if Path("/usr/bin/chromium").exists() else None)
    if not found:
        pytest.fail(f"Chromium is missing, so the picking page cannot be checked in a browser; {INSTALL}")
    return found


def write_bench(folder: Path, prompts: int = 2) -> Path:
    """``prompts`` lines; the first image path is relative to the JSONL's folder, the second absolute."""
    (folder / "images").mkdir(parents=True, exist_ok=True)
    lines = []
    for i in range(prompts):
        source, _, instruction = draw_pair(i, (96, 64))
        source.save(folder / "images" / f"src{i}.jpg", quality=92)
        image = f"images/src{i}.jpg" if i % 2 == 0 else str((folder / "images" / f"src{i}.jpg").resolve())
        lines.append(json.dumps({"image": image, "instruction": instruction}))
    bench = folder / "bench.jsonl"
    bench.write_text("\n".join(lines) + "\n\n")
    return bench


def write_candidates(folder: Path, prompts: int = 2, per_prompt: int = 3) -> Path:
    """``folder/<line>/cand<k>.png``: flat colours, so each candidate is told apart by its pixels."""
    for i in range(prompts):
        (folder / str(i)).mkdir(parents=True)
        for k in range(per_prompt):
            Image.new("RGB", (96, 64), (40 * k + 20, 100 + 50 * i, 30)).save(folder / str(i) / f"cand{k}.png")
    return folder


@pytest.fixture()
def work(tmp_path: Path) -> Path:
    bench = write_bench(tmp_path / "bench")
    cands = write_candidates(tmp_path / "cands")
    work = tmp_path / "work"
    assert align_pick_main([str(bench), "--work", str(work), "--candidates-from", str(cands), "--prepare-only"]) == 0
    return work


@pytest.fixture()
def server(work: Path):
    srv = make_server(work, "127.0.0.1", 0)
    thread = threading.Thread(target=srv.serve_forever, daemon=True)
    thread.start()
    yield srv
    srv.shutdown()
    srv.server_close()


def raw(server, method: str, path: str, body: bytes | None = None, content_type: str = "application/json"):
    """One request with the path sent exactly as given (http.client does not normalise it)."""
    conn = http.client.HTTPConnection(*server.server_address[:2], timeout=10)
    try:
        conn.putrequest(method, path, skip_accept_encoding=True)
        if body is not None:
            conn.putheader("Content-Type", content_type)
            conn.putheader("Content-Length", str(len(body)))
        conn.endheaders(body)
        response = conn.getresponse()
        return response.status, response.read()
    finally:
        conn.close()


def test_benchmark_format_and_errors(tmp_path: Path):
    bench = write_bench(tmp_path)
    lines = read_benchmark(bench)
    assert [l.line for l in lines] == [1, 2] and lines[0].image == (tmp_path / "images/src0.jpg").resolve()
    assert lines[0].record_id == "bench:1" and lines[0].instruction.startswith("remove the square")
    bad = tmp_path / "bad.jsonl"
    for text, message in [
        ('{"image": "images/src0.jpg"}', "bad.jsonl:1: 'instruction'"),
        ('{"image": "images/src0.jpg", "instruction": "x"}\n{"image": "nope.png", "instruction": "y"}', "bad.jsonl:2: image"),
        ("not json", "bad.jsonl:1: not JSON"),
        ("", "no prompts"),
    ]:
        bad.write_text(text)
        with pytest.raises(AlignError, match=message):
            read_benchmark(bad)


def test_prepare_refuses_another_benchmark_and_a_missing_folder(work: Path, tmp_path: Path):
    other = write_bench(tmp_path / "other", prompts=1)
    with pytest.raises(AlignError, match="prepared for another benchmark"):
        prepare(other, work, candidates_from=tmp_path / "cands")
    with pytest.raises(AlignError, match="no images in"):
        prepare(other, tmp_path / "work2", candidates_from=tmp_path / "bench")
    assert align_pick_main(["--work", str(tmp_path / "nowhere"), "--write-shards"]) == 2


def test_tiny_exported_pipeline_makes_one_candidate_per_guidance(tiny_sd: Path, tmp_path: Path):
    """The real path: an exported 8-channel pipeline, loaded once, edits each prompt at each guidance."""
    from diffusers import AutoencoderKL, DDPMScheduler, UNet2DConditionModel
    from transformers import CLIPTextModel, CLIPTokenizer

    from ieiw.training.export import export_pipeline
    from ieiw.training.model import widen_conv_in

    pipeline = export_pipeline(
        tmp_path / "pipeline", widen_conv_in(UNet2DConditionModel.from_pretrained(tiny_sd / "unet"), 8),
        AutoencoderKL.from_pretrained(tiny_sd / "vae"), CLIPTextModel.from_pretrained(tiny_sd / "text_encoder"),
        CLIPTokenizer.from_pretrained(tiny_sd / "tokenizer"), DDPMScheduler.from_pretrained(tiny_sd / "scheduler"),
    )
    bench = write_bench(tmp_path / "bench")
    work = tmp_path / "work"
    args = [str(bench), "--work", str(work), "--pipeline", str(pipeline), "--text-guidance", "3,7.5",
            "--image-guidance", "1.25", "--steps", "2", "--resolution", "64", "--device", "cpu", "--prepare-only"]
    started = time.monotonic()
    assert align_pick_main(args) == 0
    print(f"tiny pipeline: 2 prompts x 2 candidates in {time.monotonic() - started:.1f}s")
    state = json.loads((work / "prompts.json").read_text())
    assert [len(p["candidates"]) for p in state["prompts"]] == [2, 2]
    assert [c["text_guidance"] for c in state["prompts"][0]["candidates"]] == [3.0, 7.5]
    for prompt in state["prompts"]:
        for cand in prompt["candidates"]:
            assert Image.open(work / cand["file"]).size == (64, 64)
    mtime = (work / "prompts/p0000/c0.png").stat().st_mtime_ns
    assert align_pick_main(args) == 0  # resumable: nothing is redone
    assert (work / "prompts/p0000/c0.png").stat().st_mtime_ns == mtime
    store = PickStore(work)
    store.toggle("p0001", 1, True)
    store.write_shards()
    [sample] = ShardPairs(index_shards(work / "shards"), resolution=32, shuffle_buffer=0, epochs=1)
    assert sample["target"].shape == (3, 32, 32)
    import pyarrow.parquet as pq

    table = pq.read_table(next((work / "shards").glob("*.parquet")))
    builder = table.column("builder").to_pylist()[0]
    assert builder["name"] == "align-pick" and builder["model"] == str(pipeline.resolve())
    assert json.loads(builder["params"])["text_guidance"] == 7.5 and builder["backend"] == "ieiw-edit-official"


def test_picking_page_in_chromium_picks_survive_reload_and_become_shards(work: Path, server):
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        pytest.fail(f"playwright is missing; {INSTALL}")
    host, port = server.server_address[:2]
    assert host == "127.0.0.1"
    url = f"http://{host}:{port}/"
    errors: list[str] = []
    started = time.monotonic()
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium_path(), args=["--no-sandbox"])
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 900})
            page.on("pageerror", lambda e: errors.append(str(e)))
            page.goto(url)
            page.wait_for_selector("body[data-ready='1']")
            assert page.locator("#instruction").inner_text() == "remove the square number 0"
            assert page.locator(".cand").count() == 3
            page.wait_for_function("Array.from(document.images).every(i => i.complete)")  # images load after the DOM
            assert page.evaluate("Array.from(document.images, i => i.naturalWidth)") == [96] * 4  # source + 3

            page.locator(".cand[data-index='0']").click()  # prompt 1: keep candidates 1 and 3 by mouse
            page.locator(".cand[data-index='2']").click()
            page.wait_for_selector(".cand[data-index='2'].picked")
            page.locator(".cand[data-index='1']").click()  # a third: refused, stays unpicked
            page.wait_for_function("document.getElementById('message').textContent.includes('at most 2')")
            assert page.locator(".cand.picked").count() == 2
            assert not page.locator(".cand[data-index='1']").get_attribute("class").endswith("picked")

            page.keyboard.press("n")  # prompt 2: keep candidate 2 by keyboard, toggle 3 on and off by mouse
            page.wait_for_selector("body[data-prompt='p0001']")
            page.keyboard.press("2")
            page.wait_for_selector(".cand[data-index='1'].picked")
            page.locator(".cand[data-index='2']").click()
            page.wait_for_selector(".cand[data-index='2'].picked")
            page.locator(".cand[data-index='2']").click()
            page.wait_for_selector(".cand[data-index='2']:not(.picked)")

            page.reload()  # nothing lost: the page reads the picks back from the server
            page.wait_for_selector("body[data-ready='1']")
            assert page.evaluate("document.body.dataset.prompt") == "p0001"  # the position is in the URL
            assert page.evaluate("Array.from(document.querySelectorAll('.cand.picked'), f => f.dataset.index)") == ["1"]
            page.keyboard.press("ArrowLeft")
            page.wait_for_selector("body[data-prompt='p0000']")
            assert page.evaluate("Array.from(document.querySelectorAll('.cand.picked'), f => f.dataset.index)") == ["0", "2"]
            assert page.locator(".cand[data-index='0']").get_attribute("aria-pressed") == "true"

            page.locator("#write").click()
            page.wait_for_function("document.getElementById('written').textContent === 'wrote 3 rows'")
        finally:
            browser.close()
    print(f"browser session: {time.monotonic() - started:.1f}s")
    assert not errors, errors
    assert json.loads((work / "picks.json").read_text()) == {"p0000": [0, 2], "p0001": [1]}

    groups = index_shards(work / "shards")
    samples = list(ShardPairs(groups, resolution=32, shuffle_buffer=0, random_crop=False, random_flip=False, epochs=1))
    assert len(samples) == 3
    assert sorted(s["instruction"] for s in samples) == ["remove the square number 0"] * 2 + ["remove the square number 1"]
    assert all(s["source"].shape == (3, 32, 32) and s["target"].shape == (3, 32, 32) for s in samples)
    # the target pixels are the picked candidates' flat colours
    colours = sorted(tuple(int(c) for c in s["target"][:, 16, 16]) for s in samples)
    assert colours == sorted([(20, 100, 30), (100, 100, 30), (60, 150, 30)])
    import pyarrow.parquet as pq

    table = pq.read_table(next((work / "shards").glob("*.parquet")))
    assert set(table.column("task").to_pylist()) == {"edit"}
    assert {o["dataset"] for o in table.column("origin").to_pylist()} == {"align-picks"}
    assert {json.loads(b["params"])["candidate"] for b in table.column("builder").to_pylist()} == {0, 1, 2}
    source = (work.parent / "bench" / "images" / "src0.jpg").read_bytes()  # the benchmark image, as it was
    assert table.column("source_image").to_pylist()[0]["bytes"] == source


def test_third_pick_refused_and_picks_written_atomically(work: Path, server):
    def pick(prompt, candidate, keep=True):
        status, body = raw(server, "POST", "/api/pick", json.dumps({"prompt": prompt, "candidate": candidate, "keep": keep}).encode())
        return status, json.loads(body)

    assert pick("p0000", 0) == (200, {"prompt": "p0000", "picks": [0]})
    assert pick("p0000", 1) == (200, {"prompt": "p0000", "picks": [0, 1]})
    status, body = pick("p0000", 2)
    assert status == 409 and body["picks"] == [0, 1] and "at most 2" in body["error"]
    assert json.loads((work / "picks.json").read_text()) == {"p0000": [0, 1]}
    assert pick("p0000", 1, keep=False)[1]["picks"] == [0]
    assert pick("p0000", 2)[1]["picks"] == [0, 2]
    assert pick("p0000", 9)[0] == 404 and pick("p0099", 0)[0] == 404
    assert pick("p0000", True)[0] == 400, "a boolean is no candidate number: a malformed request"
    assert raw(server, "POST", "/api/pick", b"{", )[0] == 400
    assert raw(server, "POST", "/api/pick", b"prompt=p0000", "application/x-www-form-urlencoded")[0] == 415
    assert not list(work.glob(".tmp-*"))
    state = json.loads(raw(server, "GET", "/api/state")[1])
    assert state["picks"] == {"p0000": [0, 2]} and state["max_picks"] == 2
    # the CLI's --write-shards writes the same picks
    assert align_pick_main(["--work", str(work), "--write-shards"]) == 0
    assert sum(len(g.rows) for g in index_shards(work / "shards")) == 2
    pick("p0000", 0, keep=False)
    pick("p0000", 2, keep=False)
    assert server.store.write_shards()["rows"] == 0 and index_shards(work / "shards") == []


def test_no_request_reads_or_writes_outside_the_work_folder(work: Path, server, tmp_path: Path):
    secret = tmp_path / "secret.txt"
    secret.write_text("outside")
    (work / "link").symlink_to(secret)
    (work / "linkdir").symlink_to(tmp_path, target_is_directory=True)
    assert raw(server, "GET", "/files/prompts/p0000/c0.png")[0] == 200
    assert raw(server, "GET", "/files/picks.json")[0] == 200
    refused = [
        "/files/../../etc/passwd",
        "/files/../secret.txt",
        "/files/prompts/../../secret.txt",
        "/files/%2e%2e/%2e%2e/etc/passwd",
        "/files/..%2f..%2fetc%2fpasswd",
        "/files//etc/passwd",
        "/files/%2Fetc%2Fpasswd",
        f"/files/{secret}",
        "/files/link",
        "/files/linkdir/secret.txt",
        "/files/..\\secret.txt",
        "/../../etc/passwd",
        "/files/prompts/p0000/%00c0.png",
    ]
    for path in refused:
        status, body = raw(server, "GET", path)
        assert status in (403, 404), (path, status)
        assert b"outside" != body and b"root:" not in body, path
    assert raw(server, "GET", "/files/../../etc/passwd")[0] == 403
    assert raw(server, "GET", "/files/%2Fetc%2Fpasswd")[0] == 403
    assert raw(server, "GET", "/files/nope.png")[0] == 404
    for path in ("/files/../picks.json", "/files/x", "/", "/api/state", "/api/pick/../../x"):
        assert raw(server, "POST", path, b"{}")[0] == 404, path
    assert raw(server, "PUT", "/api/pick", b"{}")[0] == 405
    assert raw(server, "DELETE", "/files/picks.json")[0] == 405
    assert (work / "picks.json").exists() and secret.read_text() == "outside"
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(["bench", "cands", "work", "secret.txt"])


def test_ieiw_command_delegates_align_pick(capsys):
    from ieiw.cli import main

    with pytest.raises(SystemExit) as exit_:
        main(["align-pick", "--help"])
    assert exit_.value.code == 0 and "--candidates-from" in capsys.readouterr().out


def request(server, method: str, path: str, body: bytes | None = None, headers: dict[str, str] | None = None):
    """One request with exactly these headers (no Host unless given)."""
    conn = http.client.HTTPConnection(*server.server_address[:2], timeout=10)
    try:
        conn.putrequest(method, path, skip_host=True, skip_accept_encoding=True)
        for name, value in (headers or {}).items():
            conn.putheader(name, value)
        conn.endheaders(body)
        response = conn.getresponse()
        return response.status, response.read()
    finally:
        conn.close()


def local_headers(server, body: bytes = b"") -> dict[str, str]:
    return {"Host": f"127.0.0.1:{server.server_address[1]}", "Content-Type": "application/json",
            "Content-Length": str(len(body))}


def picks_now(server) -> dict:
    return json.loads(request(server, "GET", "/api/state", headers=local_headers(server))[1])["picks"]


def test_a_rebinding_page_is_refused(server):
    """A page whose own name resolves to 127.0.0.1 is same-origin with the picker but sends its name as Host."""
    port = server.server_address[1]
    pick = json.dumps({"prompt": "p0000", "candidate": 0, "keep": True}).encode()
    for host in ("evil.example", f"evil.example:{port}", "127.0.0.1:1", ""):
        assert request(server, "GET", "/api/state", headers={"Host": host})[0] == 421, host
        assert request(server, "GET", "/files/prompts.json", headers={"Host": host})[0] == 421, host
        assert request(server, "POST", "/api/pick", pick, {**local_headers(server, pick), "Host": host})[0] == 421, host
    for host in (f"127.0.0.1:{port}", f"localhost:{port}", f"LOCALHOST:{port}"):
        assert request(server, "GET", "/api/state", headers={"Host": host})[0] == 200, host
    assert picks_now(server) == {}


def test_a_negative_content_length_does_not_skip_the_body_cap(server):
    big = b'{"prompt": "p0000", "candidate": 0, "keep": true, "pad": "' + b"x" * 70_000 + b'"}'
    status, _ = request(server, "POST", "/api/pick", big, {**local_headers(server, big), "Content-Length": "-1"})
    assert status == 400 and picks_now(server) == {}


def test_a_list_prompt_is_answered_and_a_string_keep_is_no_keep(server):
    for body in ({"prompt": ["p0000"], "candidate": 0, "keep": True}, {"prompt": "p0000", "candidate": 0, "keep": "false"},
                 {"prompt": "p0000", "candidate": "0", "keep": True}):
        data = json.dumps(body).encode()
        status, answer = request(server, "POST", "/api/pick", data, local_headers(server, data))
        assert status == 400 and b"expected" in answer, body
    assert picks_now(server) == {}, "no refused request picked anything"

