"""Screenshots of the built email in headless Chromium: 375 and 800 px, light and dark."""

from __future__ import annotations

import shutil

import pytest
from PIL import Image, ImageStat

from newsletter.errors import ConfigError
from newsletter.screenshots import take_screenshots

needs_chromium = pytest.mark.skipif(shutil.which("chromium") is None, reason="Debian's chromium is not installed")


@pytest.fixture(scope="module")
def shots(rendered6, tmp_path_factory):
    out = tmp_path_factory.mktemp("shots")
    return out, take_screenshots(rendered6, out)


def mean_brightness(image: Image.Image) -> float:
    return ImageStat.Stat(image.convert("L")).mean[0]


@needs_chromium
def test_four_screenshots_with_the_right_names_and_widths(shots):
    out, paths = shots
    assert sorted(p.name for p in paths) == sorted(
        f"global-governance-of-ai-{w}-{s}.png" for w in (375, 800) for s in ("light", "dark"))
    for path in paths:
        assert path.parent == out
        with Image.open(path) as image:
            assert image.format == "PNG"
            assert image.width == int(path.stem.split("-")[-2])
            assert image.height > image.width  # the whole email, not one screen of it


@needs_chromium
def test_screenshots_are_not_blank(shots):
    for path in shots[1]:
        with Image.open(path) as image:
            grey = image.convert("L")
            low, high = grey.getextrema()
            assert high - low > 100, path.name  # text on paper, not one colour
            assert ImageStat.Stat(grey).stddev[0] > 10, path.name


@needs_chromium
def test_dark_mode_is_darker_than_light(shots):
    out = shots[0]
    for width in (375, 800):
        with Image.open(out / f"global-governance-of-ai-{width}-light.png") as light, \
                Image.open(out / f"global-governance-of-ai-{width}-dark.png") as dark:
            assert light.size == dark.size
            assert mean_brightness(light) > 200 and mean_brightness(dark) < 80


def test_missing_chromium_is_a_one_line_config_error(rendered6, tmp_path):
    with pytest.raises(ConfigError) as err:
        take_screenshots(rendered6, tmp_path, executable="no-such-chromium-binary")
    message = err.value.format_message()
    assert "\n" not in message and "no-such-chromium-binary not found" in message
    assert not list(tmp_path.iterdir())
