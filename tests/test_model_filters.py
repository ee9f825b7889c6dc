"""The paper's quality-filter models, run through their real code paths on tiny random weights (CPU,
no network): CLIP through transformers, the two LAION aesthetics heads, pytorch-fid's Inception."""

from __future__ import annotations

import os
from pathlib import Path
from unittest import mock

import numpy as np
import pytest
from ieiw_testing import tiny_clip_folder

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")

from ieiw.filters.aesthetics import HeadLoadError, LaionHeadConfig  # noqa: E402
from ieiw.backends.features.clip import ClipFeaturesConfig
from ieiw.backends.models import ModelNotFoundError  # noqa: E402
from ieiw.filters.scoring import ImageRef, PairView, ScoreContext, ScoringConfig, score_pairs  # noqa: E402
from ieiw.imageio import encode  # noqa: E402
from ieiw.schemas.rows import image_key  # noqa: E402

TINY_DIM = 32


@pytest.fixture(autouse=True)
def hash_cache(tmp_path, monkeypatch):
    """Model digests cache into the test's folder, not the user's ~/.cache."""
    monkeypatch.setenv("IEIW_CACHE_DIR", str(tmp_path / "ieiw-cache"))


def random_images(count: int, seed: int = 0) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    sizes = [(40, 56), (64, 48), (32, 32), (50, 70)]
    return [rng.integers(0, 256, (*sizes[i % len(sizes)], 3), dtype=np.uint8) for i in range(count)]


# -- CLIP -----------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def tiny_clip(tmp_path_factory) -> Path:
    """A CLIPModel (both towers, projection 32) + CLIPImageProcessor + CLIPTokenizer saved as a folder."""
    return tiny_clip_folder(tmp_path_factory.mktemp("models") / "tiny-clip", layers=2, projection=TINY_DIM)


@pytest.fixture(scope="module")
def clip(tiny_clip):
    return ClipFeaturesConfig(model=str(tiny_clip)).create()


def test_clip_config_names_and_fingerprints_the_model(tiny_clip):
    config = ClipFeaturesConfig(model=str(tiny_clip), batch_size=4)
    assert config.label() == "clip:tiny-clip" and config.model_id() == str(tiny_clip)
    assert set(config.row_params()) == {"model", "revision"}, "device, batch size and dtype do not shape rows"
    from ieiw.schemas.filehash import path_digest

    assert config.model_digests() == {"model": path_digest(tiny_clip)}
    hub = ClipFeaturesConfig(model="openai/clip-vit-large-patch14", revision="abc123")
    assert hub.label() == "clip:clip-vit-large-patch14@abc123"
    assert hub.model_id() == "openai/clip-vit-large-patch14@abc123"
    assert hub.model_digests() == {"model": "abc123"}


def test_clip_image_and_text_embeddings_share_one_normalised_space(tiny_clip, clip):
    from transformers import CLIPModel

    images = random_images(5)
    vectors = clip.image_features(images)
    assert clip.has_text and clip.dim == TINY_DIM
    assert vectors.shape == (5, TINY_DIM) and vectors.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    assert clip.image_features([]).shape == (0, TINY_DIM)

    small_batches = ClipFeaturesConfig(model=str(tiny_clip), batch_size=2).create()  # 5 images: 3 batches
    singles = np.concatenate([small_batches.image_features([image]) for image in images])
    np.testing.assert_allclose(small_batches.image_features(images), vectors, atol=1e-5)
    np.testing.assert_allclose(singles, vectors, atol=1e-5)

    texts = ["remove the dog", "add a red hat to the man", "the"]
    words = clip.text_features(texts)
    assert words.shape == (3, TINY_DIM) and words.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(words, axis=1), 1.0, atol=1e-5)

    # Same space: the model's own image-text logits are these cosines times its logit scale.
    reference = CLIPModel.from_pretrained(tiny_clip).eval()
    pixels = clip.processor(images=images, return_tensors="pt")["pixel_values"]
    tokens = clip.tokenizer(texts, padding=True, return_tensors="pt")
    with torch.inference_mode():
        out = reference(pixel_values=pixels, **tokens)
        expected = (out.logits_per_image / reference.logit_scale.exp()).numpy()
    np.testing.assert_allclose(vectors @ words.T, expected, atol=1e-4)


def test_missing_clip_model_says_where_it_must_be(tmp_path):
    missing = tmp_path / "no-such-clip"
    with pytest.raises(ModelNotFoundError, match="local Hugging Face cache") as info:
        ClipFeaturesConfig(model=str(missing)).create()
    assert str(missing) in str(info.value)
    with pytest.raises(ModelNotFoundError, match="nobody/no-such-clip-model.*local Hugging Face cache"):
        ClipFeaturesConfig(model="nobody/no-such-clip-model").create()


# -- LAION heads ----------------------------------------------------------------------------------
IMPROVED_SIZES = (TINY_DIM, 1024, 128, 64, 16, 1)


def improved_state(seed: int = 0, dim: int = TINY_DIM) -> dict[str, torch.Tensor]:
    """The official improved head's key layout (Dropouts at 1, 3, 5 hold no weights)."""
    gen = torch.Generator().manual_seed(seed)
    sizes = (dim, *IMPROVED_SIZES[1:])
    state = {}
    for index, (n_in, n_out) in zip((0, 2, 4, 6, 7), zip(sizes, sizes[1:], strict=False), strict=True):
        state[f"layers.{index}.weight"] = torch.randn(n_out, n_in, generator=gen) / n_in**0.5
        state[f"layers.{index}.bias"] = torch.randn(n_out, generator=gen)
    return state


def save_as_cuda(state: dict[str, torch.Tensor], path: Path) -> Path:
    """Save ``state`` as if its tensors lived on cuda:0, as the official improved head's file does."""
    with mock.patch("torch.serialization.location_tag", lambda storage: "cuda:0"):
        torch.save(state, path)
    return path


@pytest.fixture
def improved_head(tmp_path) -> tuple[Path, dict[str, torch.Tensor]]:
    state = improved_state()
    return save_as_cuda(state, tmp_path / "sac+logos+ava1-l14-linearMSE.pth"), state


def unit(vectors: np.ndarray) -> np.ndarray:
    vectors = np.asarray(vectors, np.float32)
    return vectors / np.linalg.norm(vectors, axis=-1, keepdims=True)


def improved_by_hand(state: dict[str, torch.Tensor], vectors: np.ndarray) -> np.ndarray:
    """No activations and Dropout is identity at inference: a chain of affine maps."""
    x = unit(vectors).astype(np.float64)
    for index in (0, 2, 4, 6, 7):
        x = x @ state[f"layers.{index}.weight"].double().numpy().T + state[f"layers.{index}.bias"].double().numpy()
    return x[:, 0]


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks loading a cuda-tagged file without a GPU")
def test_improved_head_saved_on_cuda_loads_on_cpu_and_is_its_affine_chain(improved_head):
    path, state = improved_head
    with pytest.raises(RuntimeError, match="(?i)cuda"):
        torch.load(path, weights_only=True)  # what the official file does to a plain load on a CPU machine
    scorer = LaionHeadConfig(head="improved", weights=path).create()
    assert scorer.name == "laion-improved" and scorer.family == "aesthetic" and not scorer.embedded
    vectors = np.random.default_rng(1).normal(size=(6, TINY_DIM)).astype(np.float32)
    np.testing.assert_allclose(scorer.score_vectors(vectors), improved_by_hand(state, vectors), rtol=1e-4, atol=1e-4)
    # Scale does not matter: the head L2-normalises its input again.
    np.testing.assert_allclose(scorer.score_vectors(vectors * 3), scorer.score_vectors(vectors), rtol=1e-5)


def test_v1_head_is_a_dot_product(tmp_path):
    gen = torch.Generator().manual_seed(2)
    weight, bias = torch.randn(1, TINY_DIM, generator=gen), torch.randn(1, generator=gen)
    path = tmp_path / "sa_0_4_vit_l_14_linear.pth"
    torch.save({"weight": weight, "bias": bias}, path)
    scorer = LaionHeadConfig(head="v1", weights=path).create()
    assert scorer.name == "laion-v1"
    vectors = np.random.default_rng(3).normal(size=(4, TINY_DIM)).astype(np.float32)
    expected = unit(vectors) @ weight.numpy()[0] + bias.numpy()[0]
    np.testing.assert_allclose(scorer.score_vectors(vectors), expected, rtol=1e-5, atol=1e-5)


def test_head_rejects_wrong_dims_and_wrong_files(improved_head, tmp_path):
    path, _ = improved_head
    scorer = LaionHeadConfig(head="improved", weights=path).create()
    with pytest.raises(ValueError, match=r"expects 32-d.*48-d.*CLIP ViT-L/14.*scoring\.features"):
        scorer.score_vectors(np.ones((2, 48), np.float32))
    with pytest.raises(HeadLoadError, match=r"layers\.0\.weight"):
        LaionHeadConfig(head="v1", weights=path).create().score_vectors(np.ones((1, TINY_DIM), np.float32))
    with pytest.raises(HeadLoadError, match="not found"):
        LaionHeadConfig(head="v1", weights=tmp_path / "nope.pth").create().score_vectors(np.ones((1, 8)))


# -- FID Inception --------------------------------------------------------------------------------
def random_fid_state_dict() -> dict[str, torch.Tensor]:
    """Random weights of pytorch-fid's FID Inception structure, built by pytorch-fid's own
    ``fid_inception_v3`` with its loader answered by the freshly built network's own state dict."""
    from pytorch_fid import inception as fid

    made = []
    real = fid._inception_v3

    def capture(*args, **kwargs):
        made.append(real(*args, **kwargs))
        return made[-1]

    with mock.patch.object(fid, "_inception_v3", capture), \
            mock.patch.object(fid, "load_state_dict_from_url", lambda *a, **k: made[-1].state_dict()):
        return fid.fid_inception_v3().state_dict()


@pytest.fixture(scope="module")
def fid_weights(tmp_path_factory) -> Path:
    pytest.importorskip("pytorch_fid")
    torch.manual_seed(4)
    path = tmp_path_factory.mktemp("fid") / "pt_inception-2015-12-05-6726825d.pth"
    torch.save(random_fid_state_dict(), path)
    return path


def test_fid_inception_gives_raw_pool3_features_from_the_local_file(fid_weights):
    from ieiw.backends.features.inception import FidInceptionConfig

    config = ScoringConfig.model_validate({"features": {"backend": "fid-inception", "weights": str(fid_weights)}}).features
    assert isinstance(config, FidInceptionConfig) and config.label() == "fid-inception-pool3"
    images = random_images(2, seed=5)
    from pytorch_fid import inception as fid

    loader = fid.load_state_dict_from_url
    with mock.patch("torch.hub.download_url_to_file", side_effect=AssertionError("tried to download")):
        first = config.create()
    assert fid.load_state_dict_from_url is loader, "pytorch-fid's loader is restored after construction"
    features = first.image_features(images)
    assert features.shape == (2, 2048) and features.dtype == np.float32 and first.dim == 2048
    assert not np.allclose(np.linalg.norm(features, axis=1), 1.0), "raw pool3, not L2-normalised"
    again = FidInceptionConfig(weights=fid_weights, batch_size=1).create().image_features(images)
    np.testing.assert_array_equal(again, features)  # the weights came from the file, not a fresh random init


def test_fid_inception_digest_follows_the_file(fid_weights, tmp_path):
    from ieiw.backends.features.inception import FidInceptionConfig

    path = tmp_path / "pt_inception.pth"
    state = torch.load(fid_weights, weights_only=True)
    torch.save(state, path)
    before = FidInceptionConfig(weights=path).model_digests()["weights"]
    state["fc.bias"] = state["fc.bias"] + 1
    torch.save(state, path)
    stat = path.stat()  # the digest cache keys on (size, mtime): make sure the rewrite moves the mtime
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000_000))
    after = FidInceptionConfig(weights=path).model_digests()["weights"]
    assert before and after and before != after
    assert FidInceptionConfig(weights=path).fingerprint()["models"] == {"weights": after}


# -- through the registry -------------------------------------------------------------------------
def ref(pixels: np.ndarray) -> ImageRef:
    data = encode(pixels)
    return ImageRef(image_key(data), data)


def test_scoring_config_runs_clip_then_the_improved_head(tiny_clip, improved_head):
    path, state = improved_head
    scoring = ScoringConfig.model_validate({
        "features": {"backend": "clip", "model": str(tiny_clip)},
        "scorers": [{"backend": "laion", "head": "improved", "weights": str(path)}],
    })
    assert scoring.features.label() == "clip:tiny-clip" and not scoring.features.embedded
    assert scoring.scorers[0].fingerprint()["models"]["weights"] is not None

    clip = scoring.features.create()
    a, b, c = (ref(image) for image in random_images(3, seed=6))
    pairs = [PairView("r", "remove", "remove it", a, b, None, {}), PairView("a", "add", "add it", b, a, None, {}),
             PairView("x", "remove", "remove that", c, b, None, {})]
    images = [a, b, c]
    vectors = clip.image_features([ScoreContext(features=None).pixels(image) for image in images])
    label = scoring.features.label()
    stored = {image.key: v.astype(np.float16).astype(np.float32) for image, v in zip(images, vectors, strict=True)}
    context = ScoreContext(features={label: clip}, embeddings={label: stored}, main=label)

    [scorer] = [s.create() for s in scoring.scorers]
    calls = []
    scorer.head.register_forward_hook(lambda module, args, out: calls.append(len(args[0])))
    scores = score_pairs(pairs, [scorer], context)
    assert calls == [3], "the three distinct images go through the head in one batch"
    by_hand = improved_by_hand(state, np.stack([stored[i.key] for i in images]))
    expected = dict(zip([i.key for i in images], by_hand, strict=True))
    assert scores[0]["aesthetic_backend"] == "laion-improved" and scores[0]["embedded"] is False
    assert scores[0]["source_aesthetic"] == pytest.approx(expected[a.key], rel=1e-4, abs=1e-4)
    assert scores[0]["target_aesthetic"] == scores[1]["source_aesthetic"] == scores[2]["target_aesthetic"]
    assert scores[2]["source_aesthetic"] == pytest.approx(expected[c.key], rel=1e-4, abs=1e-4)
    assert context.text_embeddings(["remove it"]).shape == (1, TINY_DIM)
