"""QR codes read back by real decoders, for the tests of the QR code and of the page.

``zbarimg`` (Debian's zbar-tools) decodes raster images; it cannot read the SVG the
daemon draws (its ImageMagick has no SVG reader here), so an SVG is drawn to PNG by
Debian's chromium, headless, as a browser draws the page's image. A tool that is missing
skips the test on a developer's machine and fails it under CI (``.ci/run`` installs them).
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

from tests.deploy.conftest import missing

CHROMIUM = "/usr/bin/chromium"


def zbarimg() -> str:
    found = shutil.which("zbarimg")
    if found is None:
        missing("zbarimg", "apt-get install zbar-tools")
    return found


def chromium() -> str:
    if not Path(CHROMIUM).is_file():
        missing(CHROMIUM, "apt-get install chromium")
    return CHROMIUM


def decode_png(png: bytes, workdir: Path) -> list[str]:
    """Every QR code zbar finds in a PNG image, as text (none: an empty list)."""
    image = workdir / "qr-decode.png"
    image.write_bytes(png)
    done = subprocess.run(  # exit status 4: no code found
        [zbarimg(), "--quiet", "--raw", "-Sdisable", "-Sqrcode.enable", str(image)],
        capture_output=True, timeout=60, check=False,
    )
    assert done.returncode in (0, 4), done.stderr.decode(errors="replace")
    return done.stdout.decode().splitlines()


def svg_to_png(svg: bytes, workdir: Path, *, size: int = 800) -> bytes:
    """An SVG document drawn by headless chromium on white, as a ``size`` square PNG."""
    source = workdir / "qr-draw.svg"
    shot = workdir / "qr-draw.png"
    source.write_bytes(svg)
    subprocess.run(
        [chromium(), "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
         f"--user-data-dir={workdir / 'chromium-profile'}", "--hide-scrollbars",
         "--default-background-color=ffffffff", f"--window-size={size},{size}",
         f"--screenshot={shot}", source.as_uri()],
        capture_output=True, timeout=120, check=True,
    )
    return shot.read_bytes()


def decode_svg(svg: bytes, workdir: Path) -> list[str]:
    """Every QR code in an SVG document, drawn by chromium and read by zbar."""
    zbarimg()  # before chromium is started for nothing
    return decode_png(svg_to_png(svg, workdir), workdir)
