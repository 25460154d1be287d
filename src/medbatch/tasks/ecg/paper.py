"""Draw synthetic ECG signals on pink paper, as the Kaggle/Mendeley scans look.

Part of the ECG task; imports numpy and PIL, never `medbatch.datasets`.
"""

from __future__ import annotations

import io
from collections.abc import Mapping, Sequence
from functools import lru_cache
from typing import Any, Literal

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from medbatch.tasks.ecg.signals import (
    _DURATION_S,
    _FS,
    KAGGLE_PAGE_SIZE,
    FloatArray,
    synthesize_ecg,
)

__all__ = ["render_ecg_page", "render_ecg_paper"]

_PAGE_MM = (297.0, 210.0)  # A4 landscape: the Kaggle scans are 2213×1572 px ≈ 7.45 px/mm
_PAPER_SPEED = 25.0  # mm/s
_GAIN = 10.0  # mm/mV
_GRID_BOX = (10.0, 24.0, 287.0, 200.0)  # x0, y0, x1, y1 of the printed grid, mm
_TRACE_X0 = 22.0  # where the traces start, mm (after the calibration pulse)
_LAYOUT = (("I", "aVR", "V1", "V4"), ("II", "aVL", "V2", "V5"), ("III", "aVF", "V3", "V6"))

_BACKGROUND = (255, 251, 251)
_MINOR = (247, 203, 210)
_MAJOR = (236, 138, 156)
_INK = (24, 24, 28)

PaperLayout = Literal["3x4+1", "3x4", "12x1"]


@lru_cache(maxsize=4)
def _grid(size: tuple[int, int]) -> bytes:
    """The empty ruled page for one size, cached: drawing it is most of a page's work."""
    width, height = size
    sx, sy = width / _PAGE_MM[0], height / _PAGE_MM[1]
    page = np.empty((height, width, 3), dtype=np.uint8)
    page[:] = _BACKGROUND
    x0, y0, x1, y1 = (round(_GRID_BOX[0] * sx), round(_GRID_BOX[1] * sy),
                      round(_GRID_BOX[2] * sx), round(_GRID_BOX[3] * sy))  # fmt: skip
    major_width = max(1, round(0.2 * sx))
    for step, colour, line_width in ((1.0, _MINOR, 1), (5.0, _MAJOR, major_width)):
        xs = np.arange(_GRID_BOX[0], _GRID_BOX[2] + 1e-6, step)
        ys = np.arange(_GRID_BOX[1], _GRID_BOX[3] + 1e-6, step)
        for offset in range(line_width):
            cols = np.clip(np.round(xs * sx).astype(int) + offset, 0, width - 1)
            rows = np.clip(np.round(ys * sy).astype(int) + offset, 0, height - 1)
            page[y0 : y1 + 1, cols] = colour
            page[rows, x0 : x1 + 1] = colour
    return page.tobytes()


@lru_cache(maxsize=8)
def _font(px: int) -> ImageFont.FreeTypeFont | ImageFont.ImageFont:
    try:
        return ImageFont.load_default(size=px)
    except (OSError, ImportError):  # Pillow built without FreeType: the bitmap font
        return ImageFont.load_default()


def render_ecg_paper(
    signals: Mapping[str, Sequence[float] | FloatArray],
    fs: float,
    *,
    size: tuple[int, int] = KAGGLE_PAGE_SIZE,
    header: Sequence[str] = (),
    rhythm_lead: str = "II",
    footer: str | None = None,
) -> Image.Image:
    """Print 12-lead waveforms on ECG paper: 3×4 layout plus a rhythm strip.

    Standard calibration: 25 mm/s, 10 mm/mV, 1 mm / 5 mm pink grid, a 1 mV calibration pulse
    at the start of each row. Column k shows seconds 2.5k-2.5(k+1) of the recording; the
    rhythm strip shows the first 10 s of `rhythm_lead`. Leads missing from `signals` leave
    their slot empty.

    Args:
        signals: Waveforms in millivolts keyed by lead name (`I`, `II`, `III`, `aVR`, `aVL`,
            `aVF`, `V1`..`V6`), all sampled at `fs`.
        fs: Sampling frequency in Hz.
        size: Page size in pixels (width, height); the page is A4 landscape scaled to it.
        header: Lines printed above the grid (never put patient identifiers here).
        rhythm_lead: The lead shown over the whole 10 s in the bottom row.
        footer: Text under the grid; defaults to the paper speed and gain.

    Returns:
        An RGB image.

    Raises:
        ValueError: `fs` is not positive or `size` is too small to draw on.
    """
    if fs <= 0:
        raise ValueError(f"sampling frequency must be positive, got {fs}")
    width, height = size
    if width < 200 or height < 140:
        raise ValueError(f"page size {size} is too small; use at least 200×140 px")
    page = Image.frombytes("RGB", (width, height), _grid((width, height)))
    draw = ImageDraw.Draw(page)
    sx, sy = width / _PAGE_MM[0], height / _PAGE_MM[1]
    line_width = max(1, round(0.27 * sx))
    label_font = _font(max(8, round(3.6 * sy)))
    small_font = _font(max(7, round(3.0 * sy)))
    rows_y = [_GRID_BOX[1] + (_GRID_BOX[3] - _GRID_BOX[1]) * (k + 0.55) / 4 for k in range(4)]
    col_mm = 2.5 * _PAPER_SPEED
    y_top, y_bottom = _GRID_BOX[1] * sy, _GRID_BOX[3] * sy

    def trace(values: FloatArray, x_mm: float, base_mm: float) -> None:
        if values.size < 2:
            return
        xs = (x_mm + np.arange(values.size) / fs * _PAPER_SPEED) * sx
        ys = np.clip((base_mm - values * _GAIN) * sy, y_top, y_bottom)
        draw.line(np.column_stack((xs, ys)).ravel().tolist(), fill=_INK, width=line_width)

    arrays = {lead: np.asarray(values, dtype=np.float64) for lead, values in signals.items()}
    per_column = round(2.5 * fs)
    for row, base_mm in enumerate(rows_y):
        # The calibration pulse: 1 mV (10 mm) for 0.2 s (5 mm).
        cx = _TRACE_X0 - 9.0
        pulse = [(cx - 2, base_mm), (cx, base_mm), (cx, base_mm - _GAIN), (cx + 5, base_mm - _GAIN),
                 (cx + 5, base_mm), (cx + 7, base_mm)]  # fmt: skip
        draw.line([(x * sx, y * sy) for x, y in pulse], fill=_INK, width=line_width)
        leads: Sequence[str] = _LAYOUT[row] if row < 3 else (rhythm_lead,)
        for col, lead in enumerate(leads):
            x_mm = _TRACE_X0 + col * col_mm
            draw.text(((x_mm + 1.5) * sx, (base_mm - 13.0) * sy), lead, fill=_INK, font=label_font)
            if col:
                # Real carts mark a lead change with a short vertical bar.
                draw.line([(x_mm * sx, (base_mm - 4) * sy), (x_mm * sx, (base_mm + 4) * sy)],
                          fill=_INK, width=line_width)  # fmt: skip
            values = arrays.get(lead)
            if values is None:
                continue
            if row < 3:
                trace(values[col * per_column : (col + 1) * per_column + 1], x_mm, base_mm)
            else:
                trace(values[: round(_DURATION_S * fs) + 1], x_mm, base_mm)

    for i, line in enumerate(header):
        draw.text((_GRID_BOX[0] * sx, (3.0 + 5.5 * i) * sy), line, fill=_INK, font=label_font)
    footer = footer or "25 mm/s    10 mm/mV    0.05-150 Hz"
    draw.text((_GRID_BOX[0] * sx, (_GRID_BOX[3] + 2.0) * sy), footer, fill=_INK, font=small_font)
    return page


def render_ecg_page(label: str, seed: int, size: tuple[int, int] = KAGGLE_PAGE_SIZE) -> Image.Image:
    """Render one synthetic 12-lead ECG printout of a class.

    Args:
        label: `NORMAL`, `ABNORMAL_HEARTBEAT`, `MYOCARDIAL_INFARCTION` or `POST_MI`.
        seed: The same `(label, seed, size)` always gives the same pixels.
        size: Page size in pixels (width, height); the Kaggle scans' size by default.

    Returns:
        An RGB image of the page.

    Raises:
        ValueError: Unknown label or a page too small to draw.
    """
    return _render_page(label, seed, size)[0]


def _render_page(
    label: str, seed: int, size: tuple[int, int]
) -> tuple[Image.Image, dict[str, Any]]:
    signals, facts = synthesize_ecg(label, seed)
    # The header carries no diagnosis: the class must be read from the waveforms.
    header = (
        f"SYNTHETIC ECG  {seed:06d}    NOT CLINICAL DATA",
        f"Vent. rate {facts['rate_bpm']} BPM",
    )
    return render_ecg_paper(signals, _FS, size=size, header=header), facts


def _jpeg(image: Image.Image, quality: int = 90) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", quality=quality)
    return buffer.getvalue()
