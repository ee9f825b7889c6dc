"""Mixed training folders with per-dataset weights that multiply each dataset's length (issue #13)."""

from __future__ import annotations

from collections import Counter

import pyarrow.parquet as pq

from ieiw.training.config import OFFICIAL_SOURCE_WEIGHTS, DataConfig
from ieiw.training.data import ShardPairs, index_shards
from trainkit import write_stage


def test_each_datasets_share_of_draws_is_its_length_times_weight_normalised(tmp_path):
    ieiw = write_stage(tmp_path / "ieiw", [("phrasecut", 120), ("sidd", 12)])
    other = write_stage(tmp_path / "other", [("gopro", 40), ("cocostuff", 60), ("instructpix2pix", 200)], start=1000)
    config = DataConfig(folder=f"{ieiw},{other}")
    assert config.folders() == [str(ieiw), str(other)]
    assert config.source_weights == OFFICIAL_SOURCE_WEIGHTS, "the official sample weights are the default"
    groups = index_shards(config.folders())
    dataset_of = {}
    for folder in (ieiw, other):
        for shard in folder.glob("*.parquet"):
            for row in pq.read_table(shard, columns=["id", "origin"]).to_pylist():
                dataset_of[row["id"]] = row["origin"]["dataset"]
    pairs = ShardPairs(groups, shuffle_buffer=64, source_weights=config.source_weights, decode=False, epochs=None)
    draws: Counter = Counter()
    for n, sample in enumerate(pairs):
        draws[dataset_of[sample["id"]]] += 1
        if n + 1 >= 10_000:
            break
    lengths = {"phrasecut": 120, "sidd": 12, "gopro": 40, "cocostuff": 60, "instructpix2pix": 200}
    expected = {d: n * OFFICIAL_SOURCE_WEIGHTS.get(d, 1.0) for d, n in lengths.items()}
    total = sum(expected.values())
    for dataset, weight in expected.items():
        share = draws[dataset] / 10_000
        assert abs(share - weight / total) <= 0.01, (dataset, share, weight / total)
