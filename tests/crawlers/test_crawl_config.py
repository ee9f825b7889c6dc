"""CrawlConfig from YAML (the snippet docs/crawl.md gives the build config), strictness, pickling."""

from __future__ import annotations

import pickle
from pathlib import Path

import pydantic
import pytest
import yaml

from ieiw.crawlers.builder import WebCrawlBuilder
from ieiw.crawlers.config import CrawlConfig

REPO = Path(__file__).resolve().parents[2]

SNIPPET = """
crawl:
  posts_per_unit: 64
  http:
    contact: you@example.org
    cache_dir: out/crawl-cache
    replay_only: false
    min_interval_s: 2.0
  reddit_api:
    subreddit: PhotoshopRequest
    max_posts: 500
  dumps:
    - submissions: data/PhotoshopRequest_submissions.zst
      comments: data/PhotoshopRequest_comments.zst
  html_sites:
    - name: psforum
      pages: [https://forum.example.org/t/1]
      selectors: {title: h1, original_image: .post img, edit: .reply, edit_image: img, edit_score: .points}
  pairs: {max_edits_per_post: 2}
  validation: {min_similarity: 0.7}
  takedown: {files: [configs/takedown.txt], entries: [t3_abc123]}
"""


def test_yaml_snippet_validates():
    cfg = CrawlConfig.model_validate(yaml.safe_load(SNIPPET)["crawl"])
    assert cfg.http.replay_only is False and cfg.http.contact == "you@example.org"
    assert cfg.dumps[0].comments == "data/PhotoshopRequest_comments.zst"
    assert cfg.html_sites[0].selectors.edit_score == ".points"
    assert cfg.pairs.max_edits_per_post == 2 and cfg.validation.min_similarity == 0.7
    assert cfg.takedown.entries == ("t3_abc123",)


@pytest.mark.parametrize("bad", [{"htp": {}}, {"http": {"timeout": 3}}, {"pairs": {"max_edits": 1}}])
def test_unknown_keys_are_refused(bad):
    with pytest.raises(pydantic.ValidationError):
        CrawlConfig.model_validate(bad)


def test_defaults_point_at_the_bundled_sample():
    cfg = CrawlConfig()
    assert cfg.http.replay_only is True
    for path in (cfg.dumps[0].submissions, cfg.dumps[0].comments, cfg.http.cache_dir, *cfg.takedown.files):
        assert (REPO / path).exists(), path


def test_builder_pickles_after_use():
    builder = WebCrawlBuilder(CrawlConfig(), REPO)
    first = builder.plan()[0]
    builder.build_unit(first)  # creates the session, lock and comment index
    clone = pickle.loads(pickle.dumps(builder))
    assert clone.fingerprint() == builder.fingerprint()
    assert len([r for r in clone.build_unit(first).rows if not r.get("drop_reason")]) == 10


def test_sample_defaults_work_from_another_directory(tmp_path):
    builder = WebCrawlBuilder(CrawlConfig(), tmp_path)  # tmp_path has no ieiw/ folder
    units = builder.plan()
    assert len(units) == 1
    assert len([r for r in builder.build_unit(units[0]).rows if not r.get("drop_reason")]) == 10
