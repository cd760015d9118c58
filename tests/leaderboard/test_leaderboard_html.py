"""The leaderboard's HTML page: self-contained (images as PNG data URIs, nothing fetched), every value from results
escaped, the paper's numbers and a legend on it; in a real headless Chromium (slow): the table text is there, every
image decodes, and a click on a column header sorts the rows by that column."""

import base64
import csv
import html
import re
import shutil
import subprocess

import pytest
from leaderboard_cases import make_result

from dyt_bench.leaderboard import main
from dyt_bench.results import write_result

HOSTILE = "<img src=x onerror=alert(1)>"
# val/acc1 per (depth, kind): depth rows, kind columns; sorting by a column must reorder the depth rows
VALUES = {(2, "dyt"): 0.70, (4, "dyt"): 0.90, (8, "dyt"): 0.80,
          (2, "layernorm"): 0.85, (4, "layernorm"): 0.75, (8, "layernorm"): 0.95,
          (2, HOSTILE): 0.5, (4, HOSTILE): 0.5, (8, HOSTILE): 0.5}


@pytest.fixture
def page_runs(tmp_path):
    root = tmp_path / "runs"
    for (depth, kind), acc in VALUES.items():
        for seed in range(2):
            run = root / f"d{depth}_{abs(hash(kind)) % 1000}_s{seed}"
            write_result(run, make_result(kind, seed, acc + 0.002 * seed, depth=depth))
            with open(run / "metrics.csv", "w", newline="") as f:
                w = csv.writer(f)
                w.writerow(["step", "val/acc1"])
                for step in (10, 20, 30):
                    w.writerow([step, (acc + 0.002 * seed) * step / 30])
    return root


def _page(page_runs, tmp_path) -> str:
    out = tmp_path / "board.html"
    assert main([str(page_runs), "--output", str(out), "--show", "throughput,memory"]) == 0
    return out.read_text(encoding="utf-8")


def _images(page: str) -> list[bytes]:
    return [base64.b64decode(m) for m in re.findall(r"src='data:image/png;base64,([A-Za-z0-9+/=]+)'", page)]


def test_the_page_is_self_contained_and_escapes_values_from_results(page_runs, tmp_path):
    page = _page(page_runs, tmp_path)
    assert page.startswith("<!doctype html>") and page.rstrip().endswith("</html>")
    assert HOSTILE not in page and html.escape(HOSTILE, quote=True) in page  # the column header, escaped
    assert "onerror=alert(1)>" not in page
    assert not re.search(r"(src|href)=['\"]?(https?:|//|file:)", page)  # nothing fetched from anywhere
    images = _images(page)
    assert len(images) == 2 and all(png[:8] == b"\x89PNG\r\n\x1a\n" for png in images)  # bars + curves
    assert page.count("<script>") == 1 and "sort" in page  # the one sorting script
    assert "0.8910 ± 0.0014 (2)" in page  # depth 4, dyt: final values 0.890 and 0.892 (best − 0.01)
    for key in ("▸ bold", "paper …", "Diverge / Stalled"):  # the legend
        assert html.escape(key) in page


def test_page_without_metrics_csvs_has_no_curves_image(tmp_path):
    root = tmp_path / "runs"
    write_result(root / "a", make_result("dyt", 0, 0.5))
    write_result(root / "b", make_result("layernorm", 0, 0.6))
    assert main([str(root), "--output", str(tmp_path / "p.html")]) == 0
    assert len(_images((tmp_path / "p.html").read_text())) == 1  # bars only


PROBE = """<script>
window.addEventListener('load', function () {
  var out = [];
  document.querySelectorAll('img').forEach(function (img) { out.push('img ' + img.naturalWidth + 'x' + img.naturalHeight); });
  var table = document.querySelector('section.lb table');
  var header = Array.from(table.querySelectorAll('thead th')).find(function (th) { return th.textContent === 'dyt'; });
  header.click(); header.click();   // twice: descending
  Array.from(table.tBodies[0].rows).forEach(function (r) { out.push('row ' + r.cells[0].textContent); });
  var pre = document.createElement('pre'); pre.id = 'probe'; pre.textContent = out.join('\\n');
  document.body.appendChild(pre);
});
</script>"""


def _chromium() -> str | None:
    return next((shutil.which(n) for n in ("chromium", "chromium-browser", "google-chrome") if shutil.which(n)), None)


@pytest.mark.slow
@pytest.mark.skipif(_chromium() is None, reason="needs a headless Chromium (apt-get install chromium)")
def test_the_page_in_a_headless_browser(page_runs, tmp_path):
    page = _page(page_runs, tmp_path)
    probed = tmp_path / "probed.html"
    probed.write_text(page.replace("</body>", PROBE + "</body>"), encoding="utf-8")
    flags = ["--headless", "--no-sandbox", "--disable-gpu", "--allow-file-access-from-files",
             "--virtual-time-budget=5000"]
    dom = subprocess.run([_chromium(), *flags, "--dump-dom", probed.as_uri()], capture_output=True, text=True,
                         timeout=120, check=True).stdout
    probe = re.search(r"<pre id=\"probe\">(.*?)</pre>", dom, re.DOTALL)
    assert probe, "the probe script did not run"
    lines = html.unescape(probe.group(1)).splitlines()
    sizes = [tuple(map(int, ln.split()[1].split("x"))) for ln in lines if ln.startswith("img ")]
    assert len(sizes) == 2 and all(w > 100 and h > 100 for w, h in sizes)  # both images decoded and laid out
    rows = [ln.split(" ", 1)[1] for ln in lines if ln.startswith("row ")]
    assert rows == ["4", "8", "2"]  # by the dyt column, descending: 0.891, 0.791, 0.691
    assert "0.8910 ± 0.0014 (2)" in html.unescape(dom)  # the table text, as the browser holds it
    shot = tmp_path / "shot.png"
    subprocess.run([_chromium(), *flags, f"--screenshot={shot}", "--window-size=1200,1600", probed.as_uri()],
                   capture_output=True, timeout=120, check=True)
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and shot.stat().st_size > 20_000
