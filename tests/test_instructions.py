"""Instruction templates: grammatical for any referring phrase, deterministic per row, user-replaceable."""

from __future__ import annotations

import re
from collections import Counter
from importlib import resources

import pytest

from ieiw.builders.instructions import (
    ADD_TEMPLATES,
    REMOVE_TEMPLATES,
    TemplateError,
    Templates,
    default_templates,
    instruction_for,
    load_templates,
    phrase_forms,
    render,
)

# phrase -> (definite form, indefinite form, plural?)
PHRASES = {
    "dog": ("the dog", "a dog", False),
    "a dog": ("the dog", "a dog", False),
    "the dog": ("the dog", "a dog", False),
    "  The   red  car ": ("the red car", "a red car", False),
    "two dogs": ("the two dogs", "two dogs", True),
    "the two cats": ("the two cats", "two cats", True),
    "his hat": ("his hat", "his hat", False),
    "her shoes": ("her shoes", "her shoes", True),
    "this car": ("this car", "this car", False),
    "those chairs": ("those chairs", "those chairs", True),
    "some people": ("some people", "some people", True),
    "some grass": ("some grass", "some grass", False),
    "man's shirt": ("the man's shirt", "a man's shirt", False),
    "people's faces": ("the people's faces", "some people's faces", True),
    "old man's shoes": ("the old man's shoes", "an old man's shoes", True),
    "trees on the hill": ("the trees on the hill", "some trees on the hill", True),
    "dog on the left": ("the dog on the left", "a dog on the left", False),
    "people walking": ("the people walking", "some people walking", True),
    "man wearing a hat": ("the man wearing a hat", "a man wearing a hat", False),
    "white clouds in blue sky": ("the white clouds in blue sky", "some white clouds in blue sky", True),
    "car parked on the street": ("the car parked on the street", "a car parked on the street", False),
    "an apple": ("the apple", "an apple", False),
    "umbrella": ("the umbrella", "an umbrella", False),
    "grass": ("the grass", "some grass", False),
    "water": ("the water", "some water", False),
    "jeans": ("the jeans", "some jeans", True),
    "glasses on table": ("the glasses on table", "some glasses on table", True),
    "bus": ("the bus", "a bus", False),
    "cactus": ("the cactus", "a cactus", False),
    "two of the dogs": ("two of the dogs", "two of the dogs", True),
    "one of the cars": ("one of the cars", "one of the cars", False),
    "cup and saucer": ("the cup and saucer", "a cup and saucer", True),
    "black and white cat": ("the black and white cat", "a black and white cat", False),
    "a few people": ("a few people", "a few people", True),
    "pair of shoes": ("the pair of shoes", "a pair of shoes", False),
    "each chair": ("each chair", "each chair", False),
    "children playing": ("the children playing", "some children playing", True),
    "tall building": ("the tall building", "a tall building", False),
    "white bowling ball": ("the white bowling ball", "a white bowling ball", False),
    "leaves": ("the leaves", "some leaves", True),
}
SINGULAR = {"is": "is", "are": "is", "was": "was", "were": "was", "has": "has", "have": "has", "does": "does",
            "do": "does", "it": "it", "them": "it", "they": "it", "its": "its", "their": "its", "this": "this",
            "these": "this", "s": "s", "es": "es"}
PLURAL = {"is": "are", "are": "are", "was": "were", "were": "were", "has": "have", "have": "have", "does": "do",
          "do": "do", "it": "them", "them": "them", "they": "they", "its": "their", "their": "their",
          "this": "these", "these": "these", "s": "", "es": ""}
DETERMINERS = r"(?:the|a|an|some|his|her|my|your|its|our|their|this|that|these|those|each|every|both|all)"
DOUBLED = re.compile(rf"\b(?:the|a|an|some) {DETERMINERS}\b", re.IGNORECASE)
ALL_TEMPLATES = [("remove", t) for t in REMOVE_TEMPLATES] + [("add", t) for t in ADD_TEMPLATES]
IDS = [f"{i:08x}" + "0" * 24 for i in range(0, 2**32, 2**32 // 240)]


def expected(template: str, phrase: str) -> str:
    """``template`` filled in from the table above, independently of the module's own analysis."""
    the_phrase, a_phrase, plural = PHRASES[phrase]
    words = PLURAL if plural else SINGULAR
    values = {"phrase": " ".join(phrase.split()), "the_phrase": the_phrase, "a_phrase": a_phrase, **words}
    for key in list(values):
        if key not in ("s", "es"):
            values[key[0].upper() + key[1:]] = values[key][:1].upper() + values[key][1:]
    return template.format(**values)


def test_the_table_is_large_enough_and_the_defaults_are_many():
    assert len(PHRASES) >= 25
    assert len(REMOVE_TEMPLATES) >= 10 and len(ADD_TEMPLATES) >= 10


@pytest.mark.parametrize("phrase", list(PHRASES))
def test_phrase_forms(phrase):
    the_phrase, a_phrase, plural = PHRASES[phrase]
    forms = phrase_forms(" ".join(phrase.split()))
    assert (forms.the_phrase, forms.a_phrase, forms.plural) == (the_phrase, a_phrase, plural)


@pytest.mark.parametrize("phrase", list(PHRASES))
def test_every_template_is_grammatical_for_every_phrase(phrase):
    for task, template in ALL_TEMPLATES:
        text = render(template, phrase)
        assert text == expected(template, phrase), (task, template)
        assert "{" not in text and "}" not in text and "  " not in text
        assert not DOUBLED.search(text), text  # no "the the", "the his", "a the", "some two"
        assert text[0].isupper() and text[-1] in ".?!", text
    # agreement where the templates ask for it
    the_phrase, _, plural = PHRASES[phrase]
    text = render("Edit the photo so that {the_phrase} {is} no longer there.", phrase)
    assert f"{the_phrase} {'are' if plural else 'is'} no longer" in text


def test_the_two_only_where_the_phrase_counts():
    remove = "Remove {the_phrase}."
    assert render(remove, "two dogs") == "Remove the two dogs."
    assert render(remove, "the two dogs") == "Remove the two dogs."
    assert render(remove, "two of the dogs") == "Remove two of the dogs."
    assert render(remove, "his hat") == "Remove his hat."
    assert render(remove, "a dog") == "Remove the dog."
    assert render("{The_phrase} {are} gone and {they} {do} not come back.", "some people") == \
        "Some people are gone and they do not come back."
    assert render("{The_phrase} {is} gone and {it} {does} not come back.", "dog") == \
        "The dog is gone and it does not come back."


def test_the_head_noun_hint_decides_agreement():
    # "swaying" reads as a participle after "tall"; PhraseCut's phrase_structure.name says the head
    assert phrase_forms("tall swaying trees", "trees").plural
    assert render("{The_phrase} {is} here.", "tall swaying trees", head="trees") == "The tall swaying trees are here."
    # a hint that is not one of the phrase's words is ignored
    assert not phrase_forms("tree on the hill", "trees").plural


def test_instructions_are_deterministic_and_spread_over_the_templates():
    chosen = Counter(instruction_for("remove", "red circle", rid) for rid in IDS)
    assert len(chosen) == len(REMOVE_TEMPLATES)
    assert [instruction_for("add", "two dogs", rid) for rid in IDS] == \
        [instruction_for("add", "two dogs", rid) for rid in IDS]
    first = REMOVE_TEMPLATES[0]
    assert instruction_for("remove", "dog", "00000000" + "f" * 24) == render(first, "dog")
    with pytest.raises(ValueError, match="empty phrase"):
        instruction_for("remove", "   ", IDS[0])
    with pytest.raises(ValueError, match="no templates for task 'paint'"):
        instruction_for("paint", "dog", IDS[0])


def test_default_templates_ship_with_the_package():
    resource = resources.files("ieiw.builders").joinpath("templates/default.yaml")
    assert resource.is_file()
    templates = default_templates()
    assert templates.source.endswith("default.yaml")
    assert templates.remove == REMOVE_TEMPLATES and templates.add == ADD_TEMPLATES


def test_a_custom_paraphrase_file(tmp_path):
    path = tmp_path / "mine.yaml"
    path.write_text(
        "# my own wording\n"
        "remove:\n"
        "  - \"Take {the_phrase} away.\"\n"
        "  - \"{The_phrase} {is} unwanted; erase {them}.\"\n"
        "add:\n"
        "  - \"Put {a_phrase} in.\"\n"
    )
    templates = load_templates(path)
    assert templates.source == str(path) and templates.digest != default_templates().digest
    texts = {instruction_for("remove", "two dogs", rid, templates) for rid in IDS}
    assert texts == {"Take the two dogs away.", "The two dogs are unwanted; erase them."}
    assert {instruction_for("add", "grass", rid, templates) for rid in IDS} == {"Put some grass in."}
    assert Templates(remove=["Remove {the_phrase}."], add=["Add {a_phrase}."]).source == "code"


@pytest.mark.parametrize(
    ("content", "fragment"),
    [
        ('remove:\n  - "Remove {the_phrase}."\n  - "Zap {thing}."\nadd:\n  - "Add {a_phrase}."\n',
         ": remove[1] 'Zap {thing}.': unknown placeholder {thing}"),
        ('remove:\n  - "Remove {the_phrase:>9}."\nadd:\n  - "Add {a_phrase}."\n',
         ": remove[0] 'Remove {the_phrase:>9}.': placeholder {the_phrase} has a format spec"),
        ('remove:\n  - "Remove it."\nadd:\n  - "Add {a_phrase}."\n', "remove[0] 'Remove it.': names no object"),
        ('remove:\n  - "Remove {}."\nadd:\n  - "Add {a_phrase}."\n', "empty placeholder"),
        ('remove:\n  - "Remove {the_phrase."\nadd:\n  - "Add {a_phrase}."\n', "remove[0]"),
        ('remove:\n  - "Remove {the_phrase}."\n', "add: missing"),
        ('remove: []\nadd:\n  - "Add {a_phrase}."\n', "remove: empty list; give at least one template"),
        ('remove:\n  - 5\nadd:\n  - "Add {a_phrase}."\n', "remove[0]: Input should be a valid string"),
        ('remove:\n  - "Remove {the_phrase}."\nadd:\n  - "Add {a_phrase}."\nremvoe: []\n', "remvoe: unknown key"),
        ('remove:\n  - "Remove {the_phrase}."\n  - "Remove {the_phrase}."\nadd:\n  - "Add {a_phrase}."\n',
         "listed twice"),
        ('remove: [\n', "not valid YAML at line"),
        ('- "Remove {the_phrase}."\n', "expected a mapping with remove: and add: lists"),
    ],
)
def test_bad_paraphrase_files_name_the_file_and_the_template(tmp_path, content, fragment):
    path = tmp_path / "bad.yaml"
    path.write_text(content)
    with pytest.raises(TemplateError) as err:
        load_templates(path)
    message = str(err.value)
    assert message.startswith(f"{path}: ") and fragment in message and "\n" not in message, message


def test_a_missing_paraphrase_file(tmp_path):
    with pytest.raises(TemplateError, match="template file not found"):
        load_templates(tmp_path / "absent.yaml")


def test_the_documented_example_file_loads(tmp_path):
    import ieiw.builders.instructions as module

    example = module.__doc__.split("```yaml\n", 1)[1].split("```", 1)[0]
    path = tmp_path / "my_templates.yaml"
    path.write_text(example)
    templates = load_templates(path)
    assert len(templates.remove) == 3 and len(templates.add) == 2
    assert render(templates.add[1], "two dogs") == "Put two dogs into the scene so that they fit in naturally."
    assert render(templates.remove[2], "grass") == "The grass should not be in this picture; take it out."
