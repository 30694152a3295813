"""Open report.html in headless Chromium and check that the embedded plots render (slow; needs chromium)."""

import os
import re
import shutil
import subprocess

import pytest

from evals.report import write_report

pytestmark = pytest.mark.slow

# The second non-baseline method's colour in every plot; nothing in the page's CSS uses it.
RED = (214, 39, 40)


def _chromium() -> str:
    for name in ("/usr/bin/chromium", "chromium", "chromium-browser", "google-chrome"):
        path = shutil.which(name)
        if path:
            return path
    pytest.skip("no chromium on this machine (apt-get install -y chromium)")


def _screenshot(html_path, tmp_path):
    png_path = html_path.with_suffix(".screenshot.png")
    cmd = [_chromium(), "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
           "--hide-scrollbars", "--window-size=1200,4000", f"--user-data-dir={tmp_path / 'profile'}",
           f"--screenshot={png_path}", html_path.as_uri()]
    env = {**os.environ, "HOME": str(tmp_path)}
    subprocess.run(cmd, check=True, capture_output=True, timeout=120, env=env)
    from matplotlib.image import imread

    return imread(str(png_path))[..., :3] * 255.0


def _count_near(img, rgb, tol=40) -> int:
    return int((abs(img - rgb).max(axis=-1) < tol).sum())


def _results():
    def run(seed, w, acc):
        return {"seed": seed, "weights": {"a": w[0], "b": w[1]},
                "metrics": {"accuracy": acc, "target_loss": 1 - acc}, "cost": {"wall_s": 5.0, "tokens": 1000}}
    return {"methods": {"uniform": [run(s, (0.5, 0.5), 0.40 + s / 100) for s in range(3)],
                        "scalebio": [run(s, (0.8, 0.2), 0.50 + s / 100) for s in range(3)],
                        "temperature": [run(s, (0.6, 0.4), 0.45) for s in range(3)]}}


def test_report_images_render_in_chromium(tmp_path):
    write_report(_results(), tmp_path / "out")
    html_path = tmp_path / "out" / "report.html"
    shot = _screenshot(html_path, tmp_path)
    assert shot.std() > 10, "blank page"
    red_with_images = _count_near(shot, RED)

    stripped = tmp_path / "out" / "stripped.html"
    stripped.write_text(re.sub(r'src="data:image/png;base64,[^"]+"', 'src=""', html_path.read_text()))
    red_without_images = _count_near(_screenshot(stripped, tmp_path), RED)

    assert red_without_images < 50
    assert red_with_images > 2000, f"plots did not render ({red_with_images} plot-coloured pixels)"
