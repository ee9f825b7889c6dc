"""Region labels (ieiw/backends/labels.py): vocabulary files in both forms, zero-shot CLIP through a
tiny random CLIP folder, and the embedded mode's nearest labelled exemplar."""

from __future__ import annotations

from importlib import resources
from pathlib import Path

import numpy as np
import pytest
from ieiw_testing import tiny_clip_folder

from ieiw.builders.instructions import REPLACE_TEMPLATES
from ieiw.phrases import label_phrase, phrase_forms, render_replace
from ieiw.backends.labels import (
    LABEL_SOURCES,
    Label,
    VocabularyError,
    ZeroShotLabeler,
    ZeroShotLabelsConfig,
    default_vocabulary,
    nearest_labelled,
    nearest_labelled_many,
    parse_vocabulary,
    read_vocabulary,
)


@pytest.fixture(autouse=True)
def hash_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("IEIW_CACHE_DIR", str(tmp_path / "ieiw-cache"))


def test_label_sources_are_the_documented_three():
    assert LABEL_SOURCES == ("open-images", "clip-zero-shot", "embedded-nearest")
    assert ZeroShotLabeler.label_source == "clip-zero-shot"


# -- vocabularies -----------------------------------------------------------------------------------
def test_the_default_vocabulary_ships_with_the_package_and_reads_well():
    assert resources.files("ieiw.backends").joinpath("vocab/objects.txt").is_file()
    names = default_vocabulary()
    assert 200 <= len(names) <= 400
    assert len({n.lower() for n in names}) == len(names)
    assert {"dog", "car", "chair", "jeans", "Christmas tree", "traffic light"} <= set(names)
    for name in names:
        assert name == label_phrase(name) and "#" not in name, name
        forms = phrase_forms(name)
        assert forms.a_phrase.split()[0] in ("a", "an", "some"), name
        if forms.a_phrase.startswith(("a ", "an ")):
            assert not forms.plural, name
    # every name reads into every replace template
    for index, name in enumerate(names):
        other = names[(index * 7 + 3) % len(names)]
        for template in REPLACE_TEMPLATES:
            text = render_replace(template, name, other)
            assert "{" not in text and text[0].isupper(), text


def test_a_plain_names_file(tmp_path):
    path = tmp_path / "names.txt"
    path.write_text("# my vocabulary\n\ndog\n  red   car  \ncat # a comment after a name\nDog\n   # indented comment\n")
    assert read_vocabulary(path) == ["dog", "red car", "cat"]


OPEN_IMAGES_ROWS = '/m/0bt9lr,Dog\n/m/01yrx,Cat\n/m/0dzct,Human face\n/m/0k4j,Car\n"/m/02wbtzl","Kitchen & dining room table"\n/m/04h7h,"Jaguar (Animal)"\n'


@pytest.mark.parametrize("header", ["", "LabelName,DisplayName\n", "\ufeffLabelName,DisplayName\n"],
                         ids=["no-header", "header", "bom-header"])
def test_open_images_class_descriptions(tmp_path, header):
    path = tmp_path / "class-descriptions.csv"
    path.write_text(header + OPEN_IMAGES_ROWS, encoding="utf-8")
    names = read_vocabulary(path)
    assert names == ["Dog", "Cat", "Human face", "Car", "Kitchen & dining room table", "Jaguar (Animal)"]
    assert [label_phrase(n) for n in names[-2:]] == ["kitchen & dining room table", "jaguar"]


@pytest.mark.parametrize(
    ("content", "fragment"),
    [("", "no names"), ("# only a comment\n\n", "no names"),
     ("/m/0bt9lr,Dog\n/m/01yrx\n", r"row 2 \['/m/01yrx'\] is not an Open Images"),
     ("LabelName,DisplayName\n/m/0bt9lr,Dog\ncat,Cat\n", "row 3")],
)
def test_bad_vocabularies_name_the_file(tmp_path, content, fragment):
    path = tmp_path / "bad.csv"
    path.write_text(content)
    with pytest.raises(VocabularyError, match=fragment) as err:
        read_vocabulary(path)
    assert str(err.value).startswith(str(path))
    with pytest.raises(VocabularyError, match="vocabulary file not found"):
        read_vocabulary(tmp_path / "absent.txt")
    assert parse_vocabulary("a\nb\n") == ["a", "b"]


def test_labels_config(tmp_path):
    default = ZeroShotLabelsConfig()
    assert default.names() == default_vocabulary() and default.preflight() == []
    path = tmp_path / "oi.csv"
    path.write_text(OPEN_IMAGES_ROWS)
    mine = ZeroShotLabelsConfig(vocabulary=path, prompt=["a photo of {a_phrase}", "{A_phrase} in a photo."])
    assert mine.names()[0] == "Dog"
    first = mine.fingerprint()
    assert first != default.fingerprint()
    path.write_text(OPEN_IMAGES_ROWS + "/m/0cmx8,Apple\n")
    assert mine.fingerprint()["vocabulary"] != first["vocabulary"], "the vocabulary's content is fingerprinted"
    assert "vocabulary" in ZeroShotLabelsConfig(vocabulary=tmp_path / "none.csv").preflight()[0]
    with pytest.raises(ValueError, match="names no object"):
        ZeroShotLabelsConfig(prompt="a photo")


# -- zero-shot CLIP ---------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def tiny_clip(tmp_path_factory) -> Path:
    return tiny_clip_folder(tmp_path_factory.mktemp("models") / "tiny-clip", layers=2, projection=32)


def crops(count: int, seed: int = 0) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    sizes = [(40, 56), (64, 48), (32, 32), (50, 70)]
    return [rng.integers(0, 256, (*sizes[i % 4], 3), dtype=np.uint8) for i in range(count)]


def test_zero_shot_labels_through_a_tiny_clip(tiny_clip):
    import torch
    from transformers import CLIPModel

    from ieiw.backends.features.clip import ClipFeaturesConfig

    vocabulary = ["dog", "jeans", "Human face", "grass", "apple", "traffic light"]
    labeler = ZeroShotLabelsConfig(vocabulary=None).labeler(ClipFeaturesConfig(model=str(tiny_clip)).create())
    labeler = ZeroShotLabeler(labeler.features, vocabulary)
    assert labeler.texts()[:4] == [["a photo of a dog"], ["a photo of some jeans"], ["a photo of a human face"],
                                   ["a photo of some grass"]]
    images = crops(6)
    labels = labeler.label(images)
    assert len(labels) == 6 and all(isinstance(x, Label) and x.label in vocabulary for x in labels)

    # the labeler's choice is the model's own: argmax of CLIP's image-text logits, score = cosine
    model = CLIPModel.from_pretrained(tiny_clip).eval()
    clip = labeler.features
    pixels = clip.processor(images=images, return_tensors="pt")["pixel_values"]
    tokens = clip.tokenizer([t[0] for t in labeler.texts()], padding=True, return_tensors="pt")
    with torch.inference_mode():
        cosine = (model(pixel_values=pixels, **tokens).logits_per_image / model.logit_scale.exp()).numpy()
    assert [x.label for x in labels] == [vocabulary[i] for i in cosine.argmax(axis=1)]
    np.testing.assert_allclose([x.score for x in labels], cosine.max(axis=1), atol=1e-4)
    assert labeler.label([]) == []

    # several prompts: the normalised mean of their text embeddings
    both = ZeroShotLabeler(clip, vocabulary, ["a photo of {a_phrase}", "{The_phrase} in a photo."])
    single = [ZeroShotLabeler(clip, vocabulary, p).text_embeddings for p in both.prompts]
    mean = single[0] + single[1]  # both rows unit-norm: the mean's direction
    np.testing.assert_allclose(both.text_embeddings, mean / np.linalg.norm(mean, axis=1, keepdims=True), atol=1e-5)


class PlantedFeatures:
    """A feature backend with a text tower whose embeddings are planted: a crop's mean colour picks its
    direction, and each text's direction is fixed by a keyword in it."""

    has_text = True
    name = "planted"
    DIRECTIONS = {"red": 0, "green": 1, "blue": 2}

    def image_features(self, images):
        out = np.stack([image.reshape(-1, 3).mean(0) for image in images]).astype(np.float32)
        return out / np.linalg.norm(out, axis=1, keepdims=True)

    def text_features(self, texts):
        out = np.full((len(texts), 3), 0.05, np.float32)
        for row, text in enumerate(texts):
            for word, axis in self.DIRECTIONS.items():
                if word in text:
                    out[row, axis] = 1.0
        return out / np.linalg.norm(out, axis=1, keepdims=True)


def test_zero_shot_picks_the_planted_label():
    labeler = ZeroShotLabeler(PlantedFeatures(), ["red apple", "green leaf", "blue car"])
    images = [np.full((8, 8, 3), colour, np.uint8) for colour in ([200, 10, 10], [10, 10, 220], [20, 180, 30])]
    labels = labeler.label(images)
    assert [x.label for x in labels] == ["red apple", "blue car", "green leaf"]
    assert all(x.score > 0.9 for x in labels)


def test_zero_shot_refuses_a_backend_without_text():
    from ieiw.backends.features.embedded import EmbeddedFeaturesConfig

    with pytest.raises(ValueError, match="text tower.*nearest_labelled"):
        ZeroShotLabeler(EmbeddedFeaturesConfig().create(), ["dog"])
    with pytest.raises(ValueError, match="empty vocabulary"):
        ZeroShotLabeler(PlantedFeatures(), [])
    with pytest.raises(ValueError, match="zero-shot prompt 'a {thing}'"):
        ZeroShotLabeler(PlantedFeatures(), ["dog"], "a {thing}")


# -- embedded: nearest labelled exemplar ------------------------------------------------------------
def test_nearest_labelled_picks_the_planted_label():
    rng = np.random.default_rng(0)
    names = ["dog", "cat", "car", "tree", "cup"]
    centres = rng.normal(size=(5, 64)).astype(np.float32)
    labelled, labels = [], []
    for index, centre in enumerate(centres):
        for _ in range(20):
            labelled.append(centre + 0.3 * rng.normal(size=64))
            labels.append(names[index])
    labelled = np.asarray(labelled, np.float32)
    order = rng.permutation(len(labels))
    labelled, labels = labelled[order], [labels[i] for i in order]
    queries = centres[[3, 0, 4, 1, 2]] + 0.2 * rng.normal(size=(5, 64)).astype(np.float32)
    found = nearest_labelled_many(queries * 7.5, labelled, labels)  # any scale: rows are normalised
    assert [x.label for x in found] == ["tree", "dog", "cup", "cat", "car"]
    unit = labelled / np.linalg.norm(labelled, axis=1, keepdims=True)
    for query, hit in zip(queries, found, strict=True):
        assert hit.score == pytest.approx(float((unit @ (query / np.linalg.norm(query))).max()), abs=1e-5)
    single = nearest_labelled(queries[0], labelled, labels)
    assert isinstance(single, Label) and single.label == found[0].label
    assert single.score == pytest.approx(found[0].score, abs=1e-6)
    # an exact copy of a labelled vector: that label, similarity 1
    assert nearest_labelled(labelled[17], labelled, labels) == Label(labels[17], pytest.approx(1.0, abs=1e-5))
    # ties go to the first row
    assert nearest_labelled(np.ones(4), np.ones((3, 4)), ["a", "b", "c"]).label == "a"


def test_nearest_labelled_in_the_embedded_feature_space():
    from ieiw.backends.features.embedded import EmbeddedFeaturesConfig

    descriptor = EmbeddedFeaturesConfig().create()
    rng = np.random.default_rng(1)

    def patch(colour):
        return np.clip(np.asarray(colour) + rng.normal(0, 12, (40, 40, 3)), 0, 255).astype(np.uint8)

    labelled = descriptor.image_features([patch([200, 30, 30]), patch([30, 160, 40]), patch([40, 50, 210])])
    labels = ["tomato", "leaf", "car"]
    queries = descriptor.image_features([patch([40, 50, 200]), patch([210, 40, 20])])
    assert [x.label for x in nearest_labelled_many(queries, labelled, labels)] == ["car", "tomato"]


def test_nearest_labelled_errors():
    with pytest.raises(ValueError, match="no labelled exemplars"):
        nearest_labelled(np.ones(3), np.zeros((0, 3)), [])
    with pytest.raises(ValueError, match="2 labelled vectors but 1 labels"):
        nearest_labelled(np.ones(3), np.ones((2, 3)), ["a"])
    with pytest.raises(ValueError, match="3 dimensions"):
        nearest_labelled(np.ones(3), np.ones((2, 4)), ["a", "b"])
