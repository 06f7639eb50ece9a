"""report.html of a small poisoned run, scored for real (`score_shard` with the tiny decoder, no Ray),
rendered in headless Chromium: a non-blank screenshot, the verdict, histogram, shard table and gallery
present, and no request leaving the file."""
from __future__ import annotations

import io
import re
import shutil
import subprocess
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

SCREENSHOT = Path("/tmp/report_screenshot.png")
CLASSES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]


class Page(HTMLParser):
    """Element ids, every img src and every URL-bearing attribute of a page."""

    def __init__(self):
        super().__init__()
        self.ids: set[str] = set()
        self.imgs: list[tuple[str, str]] = []          # (src, alt)
        self.urls: list[str] = []
        self.rows: dict[str, int] = {}
        self._table: str | None = None

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if "id" in a:
            self.ids.add(a["id"])
        if tag == "table":
            self._table = a.get("id")
        if tag == "tr" and self._table:
            self.rows[self._table] = self.rows.get(self._table, 0) + 1
        if tag == "img":
            self.imgs.append((a.get("src", ""), a.get("alt", "")))
        self.urls += [v for k, v in attrs if k in ("src", "href", "action", "srcset", "poster", "data") and v]

    def handle_endtag(self, tag):
        if tag == "table":
            self._table = None


def _trigger(jpg: bytes) -> bytes:
    """A white 8x8 patch in the corner: the planted trigger."""
    img = np.array(Image.open(io.BytesIO(jpg)).convert("RGB"))
    img[-8:, -8:] = 255
    buf = io.BytesIO()
    Image.fromarray(img).save(buf, format="PNG")
    return buf.getvalue()


def _poisoned_run(tmp_path, decoder, cifar_test_samples) -> str:
    from pipeline.corpus.ingest import write_shards
    from pipeline.dede.scorer import Scorer
    from pipeline.job.decoder import check_decoder
    from pipeline.job.runfile import write_run_json
    from pipeline.job.shard import ShardTask, score_shard

    samples = []
    for i, (key, fields) in enumerate(cifar_test_samples[:120]):
        cls = CLASSES[int(fields["cls"])]
        if i % 8 == 0:
            samples.append((key, {"png": _trigger(fields["jpg"]), "txt": b"a photo of a banana"}))
        else:
            samples.append((key, {"jpg": fields["jpg"], "txt": f"a photo of a {cls}".encode()}))
    urls = write_shards(iter(samples), str(tmp_path / "src"), shard_size=60)
    scorer = Scorer(decoder, device="cpu")
    threshold = scorer.threshold("fpr:0.05")
    out = str(tmp_path / "run")
    stems = [f"{i:06d}" for i in range(len(urls))]
    stats = [score_shard(scorer, ShardTask(url=u, stem=s, out=out, threshold=threshold, store_embeddings=True),
                         batch_size=32) for u, s in zip(urls, stems)]
    write_run_json(out, config={"inputs": [str(tmp_path / "src")], "out": out, "decoder": decoder},
                   decoder=check_decoder(decoder), policy="fpr:0.05", threshold=threshold, urls=urls, stems=stems,
                   stats=stats, seconds=1.0, scored=120)
    return out


@pytest.mark.slow
def test_report_renders_offline_in_headless_chromium(tmp_path, tiny_decoder, cifar_test_samples):
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if chromium is None:
        pytest.skip("chromium is not installed (.ci/run installs it from the Debian packages)")
    from pipeline.report.analyze import analyze_run

    summary = analyze_run(_poisoned_run(tmp_path, tiny_decoder, cifar_test_samples), progress=False)
    page = tmp_path / "run" / "report" / "report.html"
    text = page.read_text()

    parsed = Page()
    parsed.feed(text)
    assert {"verdict", "histogram", "shards", "gallery", "cluster", "errors", "run"} <= parsed.ids
    assert parsed.rows["shards"] == 1 + 2                                  # header + two shards
    assert all(u.startswith("data:") for u in parsed.urls), [u[:40] for u in parsed.urls if not u.startswith("data:")]
    assert not re.search(r"url\(\s*['\"]?(?!data:)", text) and "<script" not in text.lower()
    inputs = [s for s, alt in parsed.imgs if alt.startswith("input ")]
    recons = [s for s, alt in parsed.imgs if alt.startswith("reconstruction ")]
    assert len(inputs) == len(recons) == len(summary["gallery"]) > 0
    assert all(s.startswith("data:image/png;base64,") for s, _ in parsed.imgs)

    base = [chromium, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
            '--host-resolver-rules=MAP * ~NOTFOUND', "--window-size=1280,2400"]
    shot = tmp_path / "shot.png"
    subprocess.run([*base, f"--screenshot={shot}", page.as_uri()], check=True, capture_output=True, timeout=120)
    dom = subprocess.run([*base, "--dump-dom", page.as_uri()], check=True, capture_output=True, text=True,
                         timeout=120).stdout
    assert summary["verdict"]["line"].replace("<", "&lt;") in dom
    rendered = Page()
    rendered.feed(dom)
    assert {"verdict", "histogram", "shards", "gallery"} <= rendered.ids
    assert all(u.startswith("data:") for u in rendered.urls)

    img = np.asarray(Image.open(shot).convert("RGB"), np.float32)
    assert img.shape[:2] == (2400, 1280)
    assert img.std() > 20 and len(np.unique(img.reshape(-1, 3)[::97], axis=0)) > 50    # text, plot, images
    shutil.copyfile(shot, SCREENSHOT)
