"""The report in a real browser: Debian's chromium, headless, opens the file offline.

It must load without a script error or console message (the page's own check sets
`data-report-check="ok"` on <html> only when every chart holds drawn SVG and no error fired,
read back with `--dump-dom`; chromium's log on stderr must carry no console line), and the
screenshot must show every chart: the first series colour of each of the five charts is found in
five separate bands of the image. The screenshot is kept as a test artifact in
`reports/report-screenshot.png`.

Chromium is installed by `.ci/ensure-chromium.sh` (`make deploy-tools`); without it this test
fails, it never skips.
"""

from __future__ import annotations

import shutil
import subprocess  # nosec B404 - runs the installed chromium on a file this test wrote
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from loan_default.services import report as report_service
from loan_default.services.report.svg import PALETTE
from tests.conftest import make_settings
from tests.services.report.conftest import END, START, Seeded

REPO_ROOT = Path(__file__).resolve().parents[3]
#: A host test: `make test` runs it (and fails without chromium). The image's test stage
#: (`docker compose --profile test`) holds the package and tests/ but no browser and no `.ci/`;
#: there it is skipped, like the static checks that read the checkout.
pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(
        not (REPO_ROOT / ".ci").is_dir(),
        reason="runs on the host (make test): the test image has no browser",
    ),
]

ARTIFACTS = REPO_ROOT / "reports"
WINDOW = "1400,3000"


def _chromium() -> str:
    found = shutil.which("chromium")
    if found is None:
        pytest.fail(
            "chromium is not installed: the report's browser test needs Debian's chromium. "
            "Run `bash .ci/ensure-chromium.sh` as root (`make deploy-tools` does)."
        )
    return found


def _run(*args: str) -> subprocess.CompletedProcess[str]:
    command = [
        _chromium(),
        "--headless",
        "--disable-gpu",
        "--no-sandbox",
        "--disable-dev-shm-usage",
        "--no-first-run",
        "--enable-logging=stderr",
        "--v=0",
        *args,
    ]
    return subprocess.run(command, capture_output=True, text=True, timeout=120, check=False)  # nosec B603


def _console_lines(stderr: str) -> list[str]:
    return [ln for ln in stderr.splitlines() if "CONSOLE" in ln or "Uncaught" in ln]


def _bands(rows: np.ndarray) -> int:
    """Runs of consecutive image rows that hold the colour (gaps under 40 px join a run)."""
    ys = np.flatnonzero(rows)
    return 0 if ys.size == 0 else 1 + int(np.sum(np.diff(ys) > 40))


def test_the_report_renders_in_chromium_offline_with_every_chart(
    seeded: Seeded, tmp_path: Path
) -> None:
    page = report_service.build(
        seeded.store,
        settings=make_settings(tmp_path),
        start=START,
        end=END,
        card=seeded.card,
        card_version="1",
    )
    html = tmp_path / "report.html"
    html.write_text(page, encoding="utf-8")

    dom = _run("--dump-dom", html.as_uri())
    assert dom.returncode == 0, dom.stderr[-2000:]
    assert 'data-report-check="ok"' in dom.stdout, dom.stdout[:300]
    assert _console_lines(dom.stderr) == []
    for chart_id in report_service.CHART_IDS:
        assert f'id="{chart_id}"' in dom.stdout

    ARTIFACTS.mkdir(exist_ok=True)
    shot = ARTIFACTS / "report-screenshot.png"
    shot.unlink(missing_ok=True)
    run = _run(f"--screenshot={shot}", f"--window-size={WINDOW}", html.as_uri())
    assert run.returncode == 0, run.stderr[-2000:]
    assert shot.exists(), run.stderr[-2000:]
    assert _console_lines(run.stderr) == []
    image = np.asarray(Image.open(shot).convert("RGB"), dtype=np.int16)
    assert image.shape[:2] == (3000, 1400)
    blue = np.array([int(PALETTE[0][i : i + 2], 16) for i in (1, 3, 5)])
    faded = 0.8 * blue + 0.2 * 255  # the bars' fill-opacity over white
    near = (np.abs(image - blue).max(axis=2) < 30) | (np.abs(image - faded).max(axis=2) < 30)
    assert _bands(near.sum(axis=1) > 2) >= len(report_service.CHART_IDS)
