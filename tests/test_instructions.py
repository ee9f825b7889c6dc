"""Instruction templates: grammatical for any referring phrase, deterministic per row, user-replaceable."""

from __future__ import annotations

import hashlib
import re
from collections import Counter
from importlib import resources

import pytest

from ieiw.builders.instructions import (
    ADD_TEMPLATES,
    REMOVE_TEMPLATES,
    REPLACE_TEMPLATES,
    Templates,
    default_templates,
    instruction_for,
    load_templates,
    replace_instruction,
)
from ieiw.phrases import TemplateError, label_phrase, phrase_forms, render, render_replace

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
    # Pins the instruction of every id in IDS (the shipped templates, "two dogs"): a changed digest means
    # rows built from the same records get other instructions than in earlier releases.
    adds = [instruction_for("add", "two dogs", rid) for rid in IDS]
    assert adds[:2] == ["Add two dogs.", "Please add two dogs to the image."]
    assert hashlib.sha256("\n".join(adds).encode()).hexdigest() == \
        "82abf74a7674f75e8543bd186e0c75eed4c0699a9d51f295fbecc86e5b89c920"
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


# -- replace: "change the A to B" -------------------------------------------------------------------
# label -> (phrase after label_phrase, definite, indefinite, plural?)
LABELS = {
    "dog": ("dog", "the dog", "a dog", False),
    "apple": ("apple", "the apple", "an apple", False),
    "umbrella": ("umbrella", "the umbrella", "an umbrella", False),
    "grass": ("grass", "the grass", "some grass", False),
    "hair": ("hair", "the hair", "some hair", False),
    "jeans": ("jeans", "the jeans", "some jeans", True),
    "scissors": ("scissors", "the scissors", "some scissors", True),
    "grapes": ("grapes", "the grapes", "some grapes", True),
    "skis": ("skis", "the skis", "some skis", True),
    "bus": ("bus", "the bus", "a bus", False),
    "trash can": ("trash can", "the trash can", "a trash can", False),
    "watering can": ("watering can", "the watering can", "a watering can", False),
    "two dogs": ("two dogs", "the two dogs", "two dogs", True),
    "a cat": ("a cat", "the cat", "a cat", False),
    "the horse": ("the horse", "the horse", "a horse", False),
    "his hat": ("his hat", "his hat", "his hat", False),
    "some people": ("some people", "some people", "some people", True),
    "Human face": ("human face", "the human face", "a human face", False),
    "Person": ("person", "the person", "a person", False),
    "Sunglasses": ("sunglasses", "the sunglasses", "some sunglasses", True),
    "Jaguar (Animal)": ("jaguar", "the jaguar", "a jaguar", False),
    "Kitchen & dining room table": ("kitchen & dining room table", "the kitchen & dining room table",
                                    "a kitchen & dining room table", False),
    "Christmas tree": ("Christmas tree", "the Christmas tree", "a Christmas tree", False),
    "Ice cream": ("ice cream", "the ice cream", "some ice cream", False),
    "traffic_light": ("traffic light", "the traffic light", "a traffic light", False),
    "Sushi": ("sushi", "the sushi", "some sushi", False),
}


def expected_replace(template: str, source: str, target: str) -> str:
    """``template`` filled in from the LABELS table, independently of the module's own analysis."""
    values = {}
    for role, label in (("source", source), ("target", target)):
        phrase, the, a, plural = LABELS[label]
        words = PLURAL if plural else SINGULAR
        values.update({role: phrase, f"the_{role}": the, f"a_{role}": a})
        prefix = "" if role == "source" else "target_"
        values.update({prefix + key: value for key, value in words.items()})
    for key in list(values):
        if key not in ("s", "es", "target_s", "target_es"):
            values[key[0].upper() + key[1:]] = values[key][:1].upper() + values[key][1:]
    return template.format(**values)


def test_replace_templates_are_many_and_ship_with_the_defaults():
    assert len(REPLACE_TEMPLATES) >= 10
    assert default_templates().replace == REPLACE_TEMPLATES
    assert len(set(REPLACE_TEMPLATES)) == len(REPLACE_TEMPLATES)


@pytest.mark.parametrize("label", list(LABELS))
def test_label_phrase(label):
    assert label_phrase(label) == LABELS[label][0]
    forms = phrase_forms(label_phrase(label))
    assert (forms.the_phrase, forms.a_phrase, forms.plural) == LABELS[label][1:]


@pytest.mark.parametrize("source", list(LABELS))
def test_every_replace_template_is_grammatical_for_every_pair_of_labels(source):
    for target in LABELS:
        for template in REPLACE_TEMPLATES:
            text = render_replace(template, label_phrase(source), label_phrase(target))
            assert text == expected_replace(template, source, target), (template, source, target)
            assert "{" not in text and "}" not in text and "  " not in text
            assert not DOUBLED.search(text), text
            assert text[0].isupper() and text[-1] in ".?!", text
            assert not re.search(r"\ba [aeiou]", text, re.IGNORECASE), text  # "an apple", "an umbrella"


def test_replace_agreement_follows_each_label():
    template = "Edit the image so that {a_target} {target_is} where {the_source} {was}."
    assert render_replace(template, "two dogs", "cat") == "Edit the image so that a cat is where the two dogs were."
    assert render_replace(template, "dog", "grapes") == "Edit the image so that some grapes are where the dog was."
    assert render_replace("{The_source} {is} now {a_target}; {Target_they} fit{target_s}.", "jeans", "hat") == \
        "The jeans are now a hat; It fits."


def test_replace_instructions_are_deterministic_and_spread_over_the_templates():
    chosen = Counter(replace_instruction("dog", "Human face", rid) for rid in IDS)
    assert len(chosen) == len(REPLACE_TEMPLATES)
    assert [replace_instruction("Jeans", "apple", rid) for rid in IDS] == \
        [instruction_for("replace", "Jeans", rid, target="apple") for rid in IDS]
    first = REPLACE_TEMPLATES[0]
    assert replace_instruction("dog", "cat", "00000000" + "f" * 24) == render_replace(first, "dog", "cat")
    assert replace_instruction("Jaguar (Animal)", "Ice cream", "00000000" + "f" * 24) == \
        "Change the jaguar to some ice cream."
    with pytest.raises(ValueError, match="needs target="):
        instruction_for("replace", "dog", IDS[0])
    with pytest.raises(ValueError, match="target= is for replace"):
        instruction_for("remove", "dog", IDS[0], target="cat")
    with pytest.raises(ValueError, match="empty label"):
        replace_instruction("  ", "cat", IDS[0])


def test_a_paraphrase_file_without_replace_still_loads(tmp_path):
    path = tmp_path / "old.yaml"
    path.write_text('remove:\n  - "Remove {the_phrase}."\nadd:\n  - "Add {a_phrase}."\n')
    templates = load_templates(path)
    assert templates.replace is None
    assert instruction_for("remove", "dog", IDS[0], templates) == "Remove the dog."
    with pytest.raises(ValueError, match=f"no replace templates in {path}"):
        replace_instruction("dog", "cat", IDS[0], templates)
    # its digest is the one it had before replace templates existed (remove + add only)
    import hashlib
    import json

    before = hashlib.sha256(json.dumps({"remove": ["Remove {the_phrase}."], "add": ["Add {a_phrase}."]},
                                       sort_keys=True).encode()).hexdigest()[:16]
    assert templates.digest == before
    defaults = default_templates()
    assert defaults.digest_for(("remove", "add")) != defaults.digest
    assert Templates(remove=defaults.remove, add=defaults.add).digest == defaults.digest_for(("remove", "add"))


def test_a_paraphrase_file_with_replace(tmp_path):
    path = tmp_path / "mine.yaml"
    path.write_text('remove:\n  - "Remove {the_phrase}."\nadd:\n  - "Add {a_phrase}."\n'
                    'replace:\n  - "Swap {the_source} out for {a_target}."\n')
    templates = load_templates(path)
    assert {replace_instruction("Sunglasses", "umbrella", rid, templates) for rid in IDS} == \
        {"Swap the sunglasses out for an umbrella."}


@pytest.mark.parametrize(
    ("content", "fragment"),
    [
        ('replace:\n  - "Change {the_source}."\n', "replace[0] 'Change {the_source}.': names no target object"),
        ('replace:\n  - "Make it {a_target}."\n', "replace[0] 'Make it {a_target}.': names no source object"),
        ('replace:\n  - "Change {the_phrase} to {a_target}."\n', "unknown placeholder {the_phrase}"),
        ('replace:\n  - "Change {the_source} to {a_thing}."\n', "unknown placeholder {a_thing}"),
        ('replace: []\n', "replace: empty list"),
        ('replace:\n  - "Change {the_source} to {a_target}."\n  - "Change {the_source} to {a_target}."\n',
         "listed twice"),
    ],
)
def test_bad_replace_templates_name_the_file_and_the_template(tmp_path, content, fragment):
    path = tmp_path / "bad.yaml"
    path.write_text('remove:\n  - "Remove {the_phrase}."\nadd:\n  - "Add {a_phrase}."\n' + content)
    with pytest.raises(TemplateError) as err:
        load_templates(path)
    message = str(err.value)
    assert message.startswith(f"{path}: ") and fragment in message and "\n" not in message, message


def test_remove_templates_may_not_use_replace_placeholders(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text('remove:\n  - "Remove {the_source}."\nadd:\n  - "Add {a_phrase}."\n')
    with pytest.raises(TemplateError, match="remove\\[0\\] 'Remove {the_source}.': unknown placeholder"):
        load_templates(path)


def test_inflect_is_imported_without_typeguards_per_call_instrumentation():
    """inflect's @typechecked recompiles its engine at import (1.2-1.7 s per process) and checks every
    call; ieiw imports it with the decorator a no-op and puts typeguard's decorator back. A fresh
    process, so that no earlier test has imported inflect."""
    import subprocess
    import sys

    probe = (
        "import sys, typeguard\n"
        "from ieiw.phrases import _engine, is_plural_noun\n"
        "assert 'inflect' not in sys.modules\n"
        "engine = _engine()\n"
        "import inflect\n"
        "print(inflect.engine.singular_noun.__code__.co_names)\n"
        "import typeguard._decorators\n"
        "print(typeguard.typechecked is typeguard._decorators.typechecked)\n"
        "print(engine.a('apple'), engine.singular_noun('mice'), is_plural_noun('jeans'), is_plural_noun('dog'))\n"
    )
    lines = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True).stdout.splitlines()
    assert "TypeCheckMemo" not in lines[0] and "check_argument_types_internal" not in lines[0]
    assert lines[1] == "True"  # typeguard's own decorator is back for everyone else
    assert lines[2] == "an apple mouse True False"
