"""Fixtures for the trainer's tests: synthetic shards and a tiny SD1.5-shaped model folder built once
per session from the real diffusers/transformers classes."""

from __future__ import annotations

from pathlib import Path

import pytest

from ieiw.schemas.rows import rows_to_table
from ieiw.schemas.shards import write_shard
from trainkit import make_row, write_stage


@pytest.fixture(scope="session")
def stage_folder(tmp_path_factory) -> Path:
    """3 shards, 2 datasets, 30 rows in row groups of 4 (uneven: 12 + 11 + 7)."""
    folder = tmp_path_factory.mktemp("ieiw")
    write_stage(folder, [("phrasecut", 12), ("reddit", 11), ("phrasecut", 7)])
    # A stray shard the manifest does not list: must never be read.
    write_shard(rows_to_table([make_row(999, "stray")]), folder / "stray-00000.parquet")
    return folder


@pytest.fixture(scope="session")
def pairs8(tmp_path_factory) -> Path:
    """A fixed 8-pair subset (one shard) for the learning and resume tests."""
    return write_stage(tmp_path_factory.mktemp("pairs8"), [("phrasecut", 8)], row_group_size=8)


@pytest.fixture(scope="session")
def tiny_sd(tmp_path_factory) -> Path:
    from ieiw.training.tiny import build_tiny_sd

    return build_tiny_sd(tmp_path_factory.mktemp("tiny") / "sd")
