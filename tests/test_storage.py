"""Pure helpers of varco_ocr.storage (the object-store runs themselves are in test_ray_pipeline.py)."""

import re
from pathlib import Path

import pytest
from hypothesis import given, settings, strategies as st

from varco_ocr.storage import is_url, local_path_of


def test_file_urls_are_the_local_paths_they_name():
    assert local_path_of("file:///tmp/scans/a.png") == "/tmp/scans/a.png"
    assert local_path_of("file://localhost/tmp/a%20b%23c.png") == "/tmp/a b#c.png"
    assert local_path_of("file:///tmp/%ED%95%9C.png") == "/tmp/한.png"
    # anything else is returned as given: local paths (also ones holding '%') and store URLs
    for given_ in ("scans/a%20b.png", "/tmp/file:/x.png", "s3://bucket/a%20b.png", "file:/tmp/a.png"):
        assert local_path_of(given_) == given_
    assert not is_url("file:///tmp/a.png") and is_url("s3://bucket/a.png")


@pytest.mark.parametrize("url, reason", [
    ("file://nas/share/a.png", "on another host (nas)"),
    ("file:///tmp/a.png?v=1", "with a query or fragment"),
    ("file:///tmp/a#1.png", "with a query or fragment"),
])
def test_file_urls_that_name_no_local_file_are_refused(url, reason):
    with pytest.raises(ValueError, match=re.escape(reason)):
        local_path_of(url)


@settings(max_examples=200, deadline=None)
@given(st.lists(st.text(st.characters(blacklist_categories=("Cs",), blacklist_characters="/\\x00"), min_size=1,
                        max_size=12), min_size=1, max_size=4))
def test_a_local_paths_file_url_round_trips(parts):
    path = Path("/", *parts)
    if any(p in (".", "..") for p in parts):
        return
    assert local_path_of(path.as_uri()) == str(path)
