"""The lama-cleaner / IOPaint server backends against a loopback imitation of both endpoints: the exact
request each server reads, retries on 503, clear errors (status, body, URL), size checks, round-robin
over several URLs, and a removal unit built through a server. The real servers: tests/integration/."""

from __future__ import annotations

import base64
import io
import json
import threading
from email.parser import BytesParser
from email.policy import default as email_policy
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from pydantic import ValidationError

from ieiw.backends.inpaint import servers as inpaint_servers
from ieiw.schemas.units import BuildContext
from ieiw.backends.inpaint.servers import IOPaintConfig, InpaintServerError, LamaCleanerConfig
from ieiw.builders.removal import PhraseCutSourceConfig, RemovalBuilder, RemovalConfig
from ieiw.imageio import decode_mask, decode_rgb, encode
from ieiw.schemas.config import validate_model

# Every key lama-cleaner 1.2.5's `/inpaint` reads from request.form (lama_cleaner/server.py, process());
# a missing one is a KeyError there, which Flask answers with 400.
LAMA_CLEANER_FORM_KEYS = {
    "ldmSteps", "ldmSampler", "hdStrategy", "zitsWireframe", "hdStrategyCropMargin", "hdStrategyCropTrigerSize",
    "hdStrategyResizeLimit", "prompt", "negativePrompt", "useCroper", "croperX", "croperY", "croperHeight",
    "croperWidth", "sdScale", "sdMaskBlur", "sdStrength", "sdSteps", "sdGuidanceScale", "sdSampler", "sdSeed",
    "sdMatchHistograms", "cv2Flag", "cv2Radius", "paintByExampleSteps", "paintByExampleGuidanceScale",
    "paintByExampleMaskBlur", "paintByExampleSeed", "paintByExampleMatchHistograms", "p2pSteps",
    "p2pImageGuidanceScale", "p2pGuidanceScale", "controlnet_conditioning_scale", "controlnet_method",
}
# IOPaint 1.6.0's InpaintRequest fields this client may send, and its enums (iopaint/schema.py)
IOPAINT_KEYS = {"image", "mask", "hd_strategy", "hd_strategy_crop_trigger_size", "hd_strategy_crop_margin",
                "hd_strategy_resize_limit", "cv2_flag", "cv2_radius"}
HD_STRATEGIES = {"Crop", "Resize", "Original"}
CV2_FLAGS = {"INPAINT_NS", "INPAINT_TELEA"}


class FakeServer(ThreadingHTTPServer):
    """Both endpoints. Fills the masked pixels with ``fill``; ``script`` holds what the next requests
    get instead: ``(status, body)`` or ``"wrong_size"``."""

    daemon_threads = True

    def __init__(self, fill: tuple[int, int, int]):
        super().__init__(("127.0.0.1", 0), Handler)
        self.fill = np.array(fill, np.uint8)
        self.script: list = []
        self.requests: list[dict] = []
        self.lock = threading.Lock()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"

    @property
    def hits(self) -> int:
        return len(self.requests)


class Handler(BaseHTTPRequestHandler):
    server: FakeServer

    def log_message(self, *args) -> None:
        pass

    def reply(self, status: int, body: bytes, ctype: str = "text/plain") -> None:
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["Content-Length"]))
        ctype = self.headers["Content-Type"]
        if self.path == "/inpaint":
            message = BytesParser(policy=email_policy).parsebytes(
                b"Content-Type: " + ctype.encode() + b"\r\n\r\n" + body)
            form, files = {}, {}
            for part in message.iter_parts():
                name = part.get_param("name", header="content-disposition")
                if part.get_filename() is not None:
                    files[name] = part.get_payload(decode=True)
                else:
                    form[name] = part.get_payload(decode=True).decode()
            request = {"endpoint": "lama-cleaner", "form": form, "files": files}
            image_bytes, mask_bytes = files.get("image"), files.get("mask")
            missing = sorted(LAMA_CLEANER_FORM_KEYS - set(form))
            error = f"400 Bad Request: KeyError {missing}" if missing else None
            if not error and form["hdStrategy"] not in HD_STRATEGIES:
                error = f"bad hdStrategy {form['hdStrategy']}"
        elif self.path == "/api/v1/inpaint":
            payload = json.loads(body)
            request = {"endpoint": "iopaint", "json": payload}
            unknown = sorted(set(payload) - IOPAINT_KEYS)
            image_bytes = base64.b64decode(payload["image"])
            mask_bytes = base64.b64decode(payload["mask"])
            error = None
            if unknown or payload.get("hd_strategy", "Crop") not in HD_STRATEGIES \
                    or payload.get("cv2_flag", "INPAINT_NS") not in CV2_FLAGS:
                error = json.dumps({"detail": f"unexpected {unknown or payload}"})
        else:
            self.reply(404, b"not found")
            return
        with self.server.lock:
            self.server.requests.append(request)
            action = self.server.script.pop(0) if self.server.script else None
        if isinstance(action, tuple):
            self.reply(action[0], action[1].encode())
            return
        if error:
            self.reply(422 if request["endpoint"] == "iopaint" else 400, error.encode())
            return
        image, mask = decode_rgb(image_bytes), decode_mask(mask_bytes)
        out = image.copy()
        out[mask > 0] = self.server.fill
        if action == "wrong_size":
            out = out[:-1]
        self.reply(200, encode(out, "png"), "image/png")


@pytest.fixture
def servers():
    started: list[FakeServer] = []

    def start(fill=(10, 200, 30)) -> FakeServer:
        server = FakeServer(fill)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        started.append(server)
        return server

    yield start
    for server in started:
        server.shutdown()
        server.server_close()


@pytest.fixture(autouse=True)
def no_backoff(monkeypatch):
    monkeypatch.setattr(inpaint_servers, "BACKOFF_FACTOR", 0.0)


def inputs(n: int = 3, size=(37, 53)):
    rng = np.random.default_rng(0)
    images = [rng.integers(0, 256, (*size, 3), dtype=np.uint8) for _ in range(n)]
    masks = []
    for i in range(n):
        mask = np.zeros(size, np.uint8)
        mask[5 + i:20 + i, 10:30] = 1
        masks.append(mask)
    return images, masks


def check_filled(outs, images, masks, fill) -> None:
    for out, image, mask in zip(outs, images, masks, strict=True):
        assert out.dtype == np.uint8 and out.shape == image.shape
        assert np.array_equal(out[mask == 0], image[mask == 0]), "lossless outside the mask, order kept"
        assert (out[mask > 0] == np.array(fill, np.uint8)).all()


def test_lama_cleaner_sends_every_form_field_and_png_files(servers):
    server = servers()
    config = LamaCleanerConfig(urls=[server.url], model="lama", hd_strategy="resize", hd_strategy_resize_limit=1024)
    images, masks = inputs(2)
    check_filled(config.create().inpaint(images, masks), images, masks, server.fill)
    assert server.hits == 2
    request = server.requests[0]
    assert set(request["form"]) == LAMA_CLEANER_FORM_KEYS
    form = request["form"]
    assert (form["hdStrategy"], form["hdStrategyResizeLimit"], form["hdStrategyCropTrigerSize"],
            form["hdStrategyCropMargin"]) == ("Resize", "1024", "800", "196")
    assert (form["cv2Flag"], form["cv2Radius"], form["useCroper"]) == ("INPAINT_NS", "4", "false")
    assert set(request["files"]) == {"image", "mask"}
    assert request["files"]["image"][:8] == b"\x89PNG\r\n\x1a\n" == request["files"]["mask"][:8]
    assert np.array_equal(decode_rgb(request["files"]["image"]), images[0]), "the image goes out lossless"
    sent_mask = np.asarray(Image.open(io.BytesIO(request["files"]["mask"])))
    assert sent_mask.ndim == 2 and set(np.unique(sent_mask)) == {0, 255}
    assert np.array_equal(sent_mask > 0, masks[0] > 0)


@pytest.mark.parametrize("model", ["cv2", "lama"])
def test_iopaint_sends_json_with_hd_fields_and_cv2_fields_only_for_cv2(servers, model):
    server = servers()
    config = IOPaintConfig(urls=[server.url], model=model, hd_strategy="original", cv2_flag="INPAINT_TELEA",
                           cv2_radius=7)
    images, masks = inputs(1)
    check_filled(config.create().inpaint(images, masks), images, masks, server.fill)
    payload = server.requests[0]["json"]
    hd = {"hd_strategy": "Original", "hd_strategy_crop_trigger_size": 800, "hd_strategy_crop_margin": 196,
          "hd_strategy_resize_limit": 2048}
    cv2 = {"cv2_flag": "INPAINT_TELEA", "cv2_radius": 7} if model == "cv2" else {}
    assert {k: v for k, v in payload.items() if k not in ("image", "mask")} == {**hd, **cv2}
    assert np.array_equal(decode_rgb(base64.b64decode(payload["image"])), images[0])


def test_a_503_is_retried_then_succeeds(servers):
    server = servers()
    server.script = [(503, "busy")]
    images, masks = inputs(1)
    out = IOPaintConfig(urls=[server.url], model="cv2", retries=2).create().inpaint(images, masks)
    check_filled(out, images, masks, server.fill)
    assert server.hits == 2


def test_persistent_503_raises_after_the_retries(servers):
    server = servers()
    server.script = [(503, "still busy")] * 10
    images, masks = inputs(1)
    with pytest.raises(InpaintServerError) as caught:
        LamaCleanerConfig(urls=[server.url], model="lama", retries=2).create().inpaint(images, masks)
    assert server.hits == 3, "one try and two retries"
    assert f"{server.url}/inpaint" in str(caught.value) and "503" in str(caught.value)
    assert "still busy" in str(caught.value)


def test_a_400_raises_at_once_naming_url_status_and_body(servers):
    server = servers()
    server.script = [(400, "Mask shape(10, 10) not queal to Image shape(37, 53)" + "x" * 500)]
    images, masks = inputs(1)
    with pytest.raises(InpaintServerError) as caught:
        LamaCleanerConfig(urls=[server.url], model="lama", retries=3).create().inpaint(images, masks)
    message = str(caught.value)
    assert server.hits == 1, "a client error is not retried"
    assert f"POST {server.url}/inpaint" in message and "HTTP 400" in message
    assert "Mask shape(10, 10) not queal" in message and "x" * 300 not in message, "the body's first 200 chars"


def test_an_unreachable_server_raises_naming_the_url():
    with pytest.raises(InpaintServerError, match=r"http://127\.0\.0\.1:9/api/v1/inpaint"):
        IOPaintConfig(urls=["http://127.0.0.1:9"], model="cv2", retries=0, timeout=5).create().inpaint(*inputs(1))


def test_a_wrong_size_answer_raises(servers):
    server = servers()
    server.script = ["wrong_size"]
    with pytest.raises(InpaintServerError, match=r"answered 53x36 for a 53x37 input"):
        IOPaintConfig(urls=[server.url], model="cv2").create().inpaint(*inputs(1))


def test_two_urls_are_served_round_robin_and_order_is_kept(servers):
    first, second = servers(fill=(255, 0, 0)), servers(fill=(255, 0, 0))
    inpainter = LamaCleanerConfig(urls=[first.url, second.url + "/"], model="lama").create()
    images, masks = inputs(6)
    check_filled(inpainter.inpaint(images, masks), images, masks, (255, 0, 0))
    assert (first.hits, second.hits) == (3, 3)
    images, masks = inputs(3)
    check_filled(inpainter.inpaint(images, masks), images, masks, (255, 0, 0))
    assert first.hits + second.hits == 9 and abs(first.hits - second.hits) == 1


def test_config_label_embedded_row_params_and_validation():
    lama = LamaCleanerConfig(urls=["http://gpu1:8080"], model="lama")
    cv2 = IOPaintConfig(urls=["http://gpu1:8080"], model="cv2")
    assert (lama.label(), lama.embedded, lama.model_id()) == ("lama-cleaner-lama", False, "big-lama")
    assert (cv2.label(), cv2.embedded, cv2.model_id()) == ("iopaint-cv2", True, "cv2")
    assert "cv2_radius" in cv2.row_params() and "cv2_radius" not in lama.row_params()
    moved = LamaCleanerConfig(urls=["http://gpu2:1", "http://gpu3:1"], model="lama", timeout=5, retries=0)
    assert moved.fingerprint() == lama.fingerprint(), "urls, timeout, retries do not change outputs"
    assert LamaCleanerConfig(urls=["http://a:1"], model="lama", hd_strategy="resize").row_params() != lama.row_params()
    for bad in ({"urls": [], "model": "lama"}, {"urls": ["gpu1:8080"], "model": "lama"}, {"urls": ["http://a:1"]}):
        with pytest.raises(ValidationError):
            LamaCleanerConfig(**bad)
    with pytest.raises(ValueError, match="inpaint.urls: Field required"):
        validate_model(RemovalConfig, {"source": {"root": "x"}, "inpaint": {"backend": "iopaint", "model": "cv2"}},
                       "removal")
    config = validate_model(RemovalConfig, {"source": {"root": "x"}, "inpaint": {
        "backend": "lama-cleaner", "urls": ["http://a:1"], "model": "lama"}}, "removal")
    assert isinstance(config.inpaint, LamaCleanerConfig)


def test_a_removal_unit_builds_through_a_server(servers, sample_root):
    server = servers()
    config = RemovalConfig(source=PhraseCutSourceConfig(root=sample_root, splits=["train"]), image_format="png",
                           inpaint=IOPaintConfig(urls=[server.url], model="cv2"))
    builder = RemovalBuilder(config, BuildContext(root=Path.cwd(), out_dir=Path("out"), unit_size=4))
    result = builder.build_unit(builder.plan()[0])
    removes = [row for row in result.rows if row["task"] == "remove"]
    assert len(removes) == 4 and server.hits == 4
    for row in removes:
        assert row["builder"]["backend"] == "iopaint-cv2" and row["builder"]["embedded"] is True
        source, target = decode_rgb(row["source_image"]["bytes"]), decode_rgb(row["target_image"]["bytes"])
        mask = decode_mask(row["mask"]["bytes"]) > 0
        assert np.array_equal(source[~mask], target[~mask])
        assert (target[mask] == server.fill).all()


def closed_port() -> int:
    """A loopback port nothing listens on (bound, then released): a connection there is refused at once."""
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.mark.parametrize("config_type", [LamaCleanerConfig, IOPaintConfig])
def test_a_password_in_a_server_url_is_never_shown(config_type):
    """#24: ``user:password@`` in a server URL is redacted in errors (with their chained causes), in the
    label and model id rows record, in the fingerprint stats record, and in the config's repr."""
    import traceback

    url = f"http://alice:s3cret@127.0.0.1:{closed_port()}"
    config = config_type(urls=[url], model="lama", retries=0, timeout=5)
    with pytest.raises(InpaintServerError) as caught:
        config.create().inpaint(*inputs(1))
    shown = "".join(traceback.format_exception(caught.value))
    assert "s3cret" not in shown
    assert "alice:***@127.0.0.1" in str(caught.value), "the URL is still named, without its password"
    for public in (config.label(), config.model_id(), json.dumps(config.fingerprint()), repr(config), str(config)):
        assert "s3cret" not in public
    for bad in ("ftp://alice:s3cret@gpu1:21", "alice:s3cret@gpu1:8080"):
        with pytest.raises(ValidationError) as invalid:
            config_type(urls=[bad], model="lama")
        assert "s3cret" not in str(invalid.value.errors()[0]["msg"])
    assert inpaint_servers.redact_url("http://t0ken@gpu1:8080/x") == "http://***@gpu1:8080/x"


def test_a_server_error_with_a_password_in_the_url_is_redacted(servers):
    server = servers()
    server.script = [(400, "bad request")]
    url = server.url.replace("http://", "http://alice:s3cret@")
    with pytest.raises(InpaintServerError, match=r"POST http://alice:\*\*\*@127\.0\.0\.1:\d+/inpaint answered HTTP 400") \
            as caught:
        LamaCleanerConfig(urls=[url], model="lama").create().inpaint(*inputs(1))
    assert "s3cret" not in str(caught.value)
