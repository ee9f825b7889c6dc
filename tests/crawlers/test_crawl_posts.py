"""Post -> candidate rules and instruction cleaning, on Reddit-shaped objects."""

from __future__ import annotations

import pytest

from ieiw.crawlers.titles import instruction_from_post
from ieiw.crawlers.posts import comment_image_urls, post_image_urls, rank_edits, skip_reason, thread_from_reddit


def post(**kw):
    base = {
        "id": "p1",
        "author": "alice",
        "title": "Remove the bin",
        "selftext": "",
        "url": "https://i.redd.it/a.jpg",
        "permalink": "/r/PhotoshopRequest/comments/p1/x/",
        "created_utc": 1.0,
        "over_18": False,
    }
    base.update(kw)
    return base


def comment(cid, author, score, body, **kw):
    return {"id": cid, "author": author, "score": score, "body": body, "created_utc": 2.0, **kw}


def test_gallery_original_is_first_item_in_gallery_data_order_and_unescaped():
    p = post(
        is_gallery=True,
        url="https://www.reddit.com/gallery/p1",
        gallery_data={"items": [{"media_id": "m2"}, {"media_id": "m1"}, {"media_id": "m3"}]},
        media_metadata={
            "m1": {"status": "valid", "e": "Image", "s": {"u": "https://preview.redd.it/1.jpg?a=1&amp;s=x"}},
            "m2": {"status": "valid", "e": "Image", "s": {"u": "https://preview.redd.it/2.jpg?a=1&amp;s=y"}},
            "m3": {"status": "failed"},
        },
    )
    assert post_image_urls(p) == ["https://preview.redd.it/2.jpg?a=1&s=y", "https://preview.redd.it/1.jpg?a=1&s=x"]


def test_comment_images_inline_media_and_links():
    c = comment(
        "c1",
        "bob",
        3,
        "![img](abc)\n\nalso [v2](https://i.imgur.com/x.png). and https://imgur.com/gallery/zz",
        media_metadata={
            "abc": {"status": "valid", "e": "Image", "s": {"u": "https://preview.redd.it/abc.png?s=1&amp;t=2"}}
        },
    )
    assert comment_image_urls(c) == ["https://preview.redd.it/abc.png?s=1&t=2", "https://i.imgur.com/x.png"]


@pytest.mark.parametrize(
    "fields,reason",
    [
        ({"over_18": True}, "over_18"),
        ({"author": "[deleted]"}, "deleted"),
        ({"selftext": "[removed]"}, "removed"),
        ({"removed_by_category": "moderator"}, "removed"),
        ({"is_video": True, "url": "https://v.redd.it/abc"}, "video"),
        ({"url": "https://i.imgur.com/abc.gifv"}, "video"),
        ({"url": "https://example.com/article", "post_hint": "link"}, "not_image"),
        ({"is_self": True, "url": "https://www.reddit.com/r/x/comments/p1/"}, "not_image"),
        ({}, None),
    ],
)
def test_skip_rules(fields, reason):
    got = skip_reason(thread_from_reddit(post(**fields), []))
    assert (got[0] if got else None) == reason


def test_edits_exclude_the_poster_and_deleted_and_rank_by_score():
    t = thread_from_reddit(
        post(),
        [
            comment("c1", "bob", 5, "https://i.redd.it/b.jpg"),
            comment("c2", "alice", 50, "mine https://i.redd.it/c.jpg"),
            comment("c3", "carol", 9, "https://i.imgur.com/d.png"),
            comment("c4", "[deleted]", 99, "https://i.redd.it/e.jpg"),
            comment("c5", "dave", 7, "[deleted]"),
            comment("c6", "erin", 80, "nice!"),
        ],
    )
    assert [(e.comment.id, e.url) for e in rank_edits(t)] == [
        ("c3", "https://i.imgur.com/d.png"),
        ("c1", "https://i.redd.it/b.jpg"),
    ]
    assert [e.comment.id for e in rank_edits(t, min_score=6)] == ["c3"]


@pytest.mark.parametrize(
    "title,body,expected",
    [
        (
            "[Paid] Can someone remove the guy in the background?",
            "Hi everyone! This is my mom's birthday photo. Will tip $10 to the best one. Thanks in advance!",
            "Remove the guy in the background.",
        ),
        (
            "(Free) Please make the sky blue",
            "Hello, please also brighten her face, will tip $5. TIA",
            "Make the sky blue and brighten her face.",
        ),
        (
            "[Paid] Could you change the colour of the car to green? $20",
            "",
            "Change the colour of the car to green.",
        ),
        ("PAID: Remove the sign from the wall [$15]", "", "Remove the sign from the wall."),
        (
            "[Paid]",
            "Hey guys\nCould you remove the power lines and the trash can?\nPaying $20 via PayPal",
            "Remove the power lines and the trash can.",
        ),
        ("Thanks!", "Thanks", ""),
    ],
)
def test_instruction_cleaning_keeps_the_request(title, body, expected):
    assert instruction_from_post(title, body) == expected


def test_instruction_is_length_capped_at_a_sentence():
    body = " ".join(f"Also fix detail number {i}." for i in range(50))
    out = instruction_from_post("Remove the bin", body, max_chars=80)
    # several requests become one sentence, cut at a whole request
    assert len(out) <= 80 and out == "Remove the bin, fix detail number 0 and fix detail number 1."


@pytest.mark.parametrize(
    "fields,field",
    [
        ({"created_utc": float("nan")}, "created_utc is float nan, not a finite number"),
        ({"created_utc": float("inf")}, "created_utc is float inf, not a finite number"),
        ({"created_utc": "Infinity"}, "created_utc is str 'Infinity', not a finite number"),
        ({"created_utc": "yesterday"}, "created_utc is str 'yesterday', not a finite number"),
        ({"created_utc": [1]}, "created_utc is list [1], expected a number"),
        ({"title": ["a"]}, "title is list ['a'], expected a string"),
        ({"author": 5}, "author is int 5, expected a string"),
        ({"url": 5}, "url is int 5, expected a string"),
        ({"is_gallery": True, "gallery_data": {"items": ["m1"]}}, "an item of items is str 'm1', expected an object"),
    ],
)
def test_a_field_of_the_wrong_type_or_not_finite_is_a_bad_record(fields, field):
    from ieiw.crawlers.posts import BadRecord

    with pytest.raises(BadRecord) as info:
        thread_from_reddit(post(**fields), [])
    assert str(info.value) == field


@pytest.mark.parametrize(
    "fields,field",
    [
        ({"score": float("inf")}, "comment c1: score is float inf, not a finite number"),
        ({"score": float("nan")}, "comment c1: score is float nan, not a finite number"),
        ({"created_utc": float("-inf")}, "comment c1: created_utc is float -inf, not a finite number"),
        ({"body": 123}, "comment c1: body is int 123, expected a string"),
        ({"media_metadata": [1], "body": "![img](m1)"}, "comment c1: media_metadata is list [1], expected an object"),
        ({"permalink": 3}, "comment c1: permalink is int 3, expected a string"),
    ],
)
def test_a_comment_field_of_the_wrong_type_or_not_finite_is_a_bad_record(fields, field):
    from ieiw.crawlers.posts import BadRecord

    with pytest.raises(BadRecord) as info:
        thread_from_reddit(post(), [dict(comment("c1", "bob", 5, "https://i.redd.it/b.jpg"), **fields)])
    assert str(info.value) == field


def test_finite_numbers_and_numeric_strings_are_read():
    t = thread_from_reddit(post(created_utc="1714564800"), [comment("c1", "bob", "7", "x", created_utc=None)])
    assert t.created_utc == 1714564800.0 and t.comments[0].score == 7 and t.comments[0].created_utc is None
