"""One rule for every name a dataset supplies that becomes a path (docs/formats.md, "Names that become paths"):
``ieiw.schemas.paths.path_under`` keeps it under its root, refusing absolute paths, ``..``, empty names, NUL
bytes and symlinks that lead out. The readers' own tests (test_regions, test_convert_keypoints,
test_convert_segmentation, test_convert_enhance, test_importers, test_object_storage) show each one turns a
refusal into a named failure."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from ieiw.schemas.paths import PATH_OUTSIDE_ROOT, PathOutsideRoot, path_under


@pytest.fixture
def root(tmp_path) -> Path:
    root = tmp_path / "data" / "images"
    (root / "sub").mkdir(parents=True)
    (root / "sub" / "a.jpg").write_bytes(b"a")
    (tmp_path / "elsewhere").mkdir()
    (tmp_path / "elsewhere" / "secret.jpg").write_bytes(b"secret")
    return root


def test_names_under_the_root_are_joined_as_written(root):
    assert path_under(root, "sub/a.jpg") == root / "sub" / "a.jpg"
    assert path_under(str(root), "./sub/a.jpg") == root / "sub" / "a.jpg"
    assert path_under(root, "not-there-yet.jpg") == root / "not-there-yet.jpg"  # existence is the reader's business
    assert path_under(root, "x..y.jpg") == root / "x..y.jpg"  # dots inside a name are no component
    (root / "inside.jpg").symlink_to(root / "sub" / "a.jpg")
    assert path_under(root, "inside.jpg") == root / "inside.jpg"  # a symlink that stays inside is fine


@pytest.mark.parametrize("name, why", [
    ("", "empty"),
    ("a\x00.jpg", "NUL"),
    ("/etc/passwd", "absolute"),
    ("\\server\\x.jpg", "absolute"),
    ("../../elsewhere/secret.jpg", "'..'"),
    ("sub/../sub/a.jpg", "'..'"),  # lands inside again, refused all the same
    ("sub\\..\\..\\x.jpg", "'..'"),
    ("..", "'..'"),
    (5, "string"),
    (None, "string"),
])
def test_names_that_could_lead_out_are_refused(root, name, why):
    with pytest.raises(PathOutsideRoot) as refused:
        path_under(root, name)
    assert isinstance(refused.value, ValueError) and refused.value.reason == PATH_OUTSIDE_ROOT == "path_outside_root"
    message = str(refused.value)
    assert repr(name) in message and str(root) in message and why in message


def test_absolute_paths_to_real_files_are_refused(root, tmp_path):
    secret = tmp_path / "elsewhere" / "secret.jpg"
    with pytest.raises(PathOutsideRoot, match="absolute"):
        path_under(root, str(secret))
    with pytest.raises(PathOutsideRoot, match="absolute"):
        path_under(root, str(root / "sub" / "a.jpg"))  # even one inside the root: names are relative


def test_symlinks_out_of_the_root_are_refused(root, tmp_path):
    (root / "link.jpg").symlink_to(tmp_path / "elsewhere" / "secret.jpg")
    (root / "linkdir").symlink_to(tmp_path / "elsewhere")
    (root / "up").symlink_to(Path("..") / "..")  # a relative link climbing out
    for name in ("link.jpg", "linkdir/secret.jpg", "up/elsewhere/secret.jpg", "linkdir/not-there.jpg"):
        with pytest.raises(PathOutsideRoot, match="through a symlink") as refused:
            path_under(root, name)
        assert str((tmp_path / "elsewhere").resolve()) in str(refused.value)  # where it really leads
    (root / "loop").symlink_to(root / "loop")  # a loop does not crash the check: refused (Python < 3.13), or
    try:                                          # left unresolved inside the root, where reading it fails
        assert path_under(root, "loop/x.jpg") == root / "loop" / "x.jpg"
    except PathOutsideRoot as refused:
        assert "cannot be resolved" in str(refused)


def test_a_root_that_is_itself_a_symlink_is_followed(root, tmp_path):
    """The root is configuration (trusted): a dataset folder linked from another disk works."""
    linked = tmp_path / "linked-root"
    linked.symlink_to(root, target_is_directory=True)
    assert path_under(linked, "sub/a.jpg") == linked / "sub" / "a.jpg"
    assert path_under(linked, "sub/a.jpg").read_bytes() == b"a"
    with pytest.raises(PathOutsideRoot):
        path_under(linked, os.path.relpath(tmp_path / "elsewhere" / "secret.jpg", linked))
