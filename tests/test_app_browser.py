"""The app in a real browser: Debian's Chromium driven by Playwright (installed by .ci/run; see README)."""

from __future__ import annotations

import contextlib
import shutil
from collections.abc import Iterator
from pathlib import Path

import PIL.Image
import pytest
from conftest import REPO_ROOT, serve_app

pytestmark = pytest.mark.slow  # drives the app in Chromium

playwright = pytest.importorskip("playwright.sync_api", reason="pip install playwright (in requirements.txt)")
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]


@contextlib.contextmanager
def app_page() -> Iterator:
    """The app served in this process, open in a headless Chromium page of 1280x1400."""
    with serve_app() as url, playwright.sync_playwright() as driver:
        browser = driver.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 1400})
            page.goto(url)
            yield page
        finally:
            browser.close()


@pytest.mark.skipif(not Path(CHROMIUM).is_file(), reason="needs Chromium: apt-get install -y chromium")
def test_fuse_a_pair_in_the_browser(tmp_path):
    example = REPO_ROOT / "examples" / "MIF-PET"
    mri, pet = sorted(example.glob("*_mri.png"))[0], sorted(example.glob("*_pet.png"))[0]
    with app_page() as page:
        page.get_by_role("radio", name="MRI + PET (MIF)").check()
        # The input labels follow the task.
        playwright.expect(page.locator("#image-a")).to_contain_text("MRI", timeout=20_000)
        playwright.expect(page.locator("#image-b")).to_contain_text("PET")
        page.locator("#image-a input[type=file]").set_input_files(str(mri))
        page.locator("#image-b input[type=file]").set_input_files(str(pet))
        playwright.expect(page.locator("#image-b img")).to_have_count(1, timeout=20_000)  # upload previewed
        page.locator("#fuse").click()
        playwright.expect(page.locator("#timing")).to_contain_text("Fused 256x256 (colour)", timeout=120_000)
        result = page.locator("#fused img")
        playwright.expect(result).to_have_count(1)
        assert result.evaluate("img => img.complete && img.naturalWidth") == 256  # the PNG really loaded
        screenshot = tmp_path / "app.png"
        page.screenshot(path=str(screenshot), full_page=True)
    image = PIL.Image.open(screenshot)
    assert image.width == 1280 and image.height > 800


@pytest.mark.skipif(not Path(CHROMIUM).is_file(), reason="needs Chromium: apt-get install -y chromium")
def test_an_error_stays_readable_on_the_page(tmp_path):
    """Error toasts used to vanish after about 18 s and leave red "Error" pills; the message must stay."""
    example = REPO_ROOT / "examples"
    mri = sorted((example / "MIF-PET").glob("*_mri.png"))[0]
    under = sorted((example / "MEF").glob("*_under.*"))[0]  # another size than the MRI image
    with app_page() as page:
        page.get_by_role("radio", name="Multi-exposure (MEF)").check()
        page.locator("#image-a input[type=file]").set_input_files(str(under))
        page.locator("#image-b input[type=file]").set_input_files(str(mri))
        playwright.expect(page.locator("#image-b img")).to_have_count(1, timeout=20_000)
        page.locator("#fuse").click()
        message = page.get_by_text("The two images differ in size")
        playwright.expect(message.first).to_be_visible(timeout=60_000)
        page.wait_for_timeout(25_000)  # past the old toast's lifetime
        playwright.expect(message.first).to_be_visible()


@pytest.mark.skipif(not Path(CHROMIUM).is_file(), reason="needs Chromium: apt-get install -y chromium")
def test_frames_go_through_the_one_fuse_button_and_errors_leave_the_intro_readable(tmp_path):
    """Frames uploaded under 'Exposure bracket or focus stack' are what Fuse fuses; a file that is not an image is
    cleared as it arrives, with a message; error messages sit at the bottom right, not over the introduction."""
    from conftest import DATA

    frames = []
    for index, path in enumerate(sorted((DATA / "MEF" / "Waterloo" / "sequences" / "Candle").glob("*.png"))[:3]):
        frames.append(tmp_path / f"frame_{index}.png")
        PIL.Image.open(path).reduce(4).save(frames[-1])
    text = tmp_path / "notes.png"
    text.write_text("not an image")
    with app_page() as page:
        page.get_by_role("radio", name="Multi-exposure (MEF)").check()
        page.locator("#image-a input[type=file]").set_input_files(str(text))
        warning = page.get_by_text("could not be read")
        playwright.expect(warning.first).to_be_visible(timeout=30_000)
        playwright.expect(page.locator("#image-a img")).to_have_count(0)  # the upload was cleared
        intro = page.get_by_text("one-step image fusion").bounding_box()
        toast = warning.first.bounding_box()
        assert toast["y"] > intro["y"] + intro["height"], "the message covers the introduction"
        page.get_by_role("button", name="Exposure bracket or focus stack").click()
        page.locator("#frames input[type=file]").set_input_files([str(path) for path in frames])
        playwright.expect(page.locator("#frames")).to_contain_text("frame_2 .png", timeout=30_000)
        page.locator("#fuse").click()
        playwright.expect(page.locator("#timing")).to_contain_text("Fused 3 frames at", timeout=120_000)
        playwright.expect(page.locator("#fused img")).to_have_count(1)
