"""Rendering of the Secondary Capture overlay images with OpenCV: outlines, legend, banner.

:func:`render_key_slice` draws one slice in the brain window (centre 40 HU,
width 80 HU) with each finding's outline in its colour and a legend under
it; :func:`render_summary` draws the summary image, a title, the table of
findings (:data:`SUMMARY_COLUMNS`, :func:`finding_table_row`) and a footer.
Both put the banner "NOT FOR DIAGNOSTIC USE - AI RESULT" (:data:`BANNER_TEXT`)
on top. The text is ASCII, in OpenCV's Hershey simplex font
(:func:`wrap_text`, :func:`finding_line`); the images are uint8 RGB arrays.

:mod:`dicom_node.results.sc` chooses the key slices and wraps these images
as Secondary Capture instances; every public name here is importable from
there too.

References
----------
PS3.3 C.11.2.1.2 Window Center and Window Width (the brain window);
PS3.3 C.7.6.1 General Image Module (Burned In Annotation: the banner and
legend are burned into the pixels); IHE AIR (a visible "not for diagnostic
use" marking).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import cv2
import numpy as np

from dicom_node.imaging.windowing import BRAIN_WINDOW, apply_window
from dicom_node.results import codes

#: The text of the banner on every overlay image.
BANNER_TEXT = "NOT FOR DIAGNOSTIC USE - AI RESULT"
#: Banner background (RGB): dark red, unlike every finding colour.
BANNER_RGB = (150, 0, 0)
#: Banner text colour (RGB).
BANNER_TEXT_RGB = (255, 255, 255)
#: Background of the legend and summary panels (RGB).
PANEL_RGB = (24, 24, 24)

_FONT = cv2.FONT_HERSHEY_SIMPLEX


@dataclass(frozen=True)
class OverlayLayout:
    """Geometry of a rendered overlay image (pixels).

    Parameters
    ----------
    scale : int
        Integer magnification of the slice (2 turns 512 x 512 into 1024 x 1024),
        so that outlines and text stay legible.
    banner_height_px : int
        Height of the banner at the top.
    legend_row_px : int
        Height of one legend or table row.
    outline_px : int
        Outline thickness.
    """

    scale: int = 2
    banner_height_px: int = 64
    legend_row_px: int = 40
    outline_px: int = 2


def _bgr(rgb: tuple[int, int, int]) -> tuple[int, int, int]:
    return (int(rgb[2]), int(rgb[1]), int(rgb[0]))


def wrap_text(text: str, width_px: int, *, scale: float = 0.7, thickness: int = 1) -> list[str]:
    """Split text into lines that fit a pixel width in OpenCV's Hershey simplex font.

    Parameters
    ----------
    text : str
        ASCII text; split at blanks (a single word wider than the line stays whole).
    width_px : int
        Largest line width in pixels.
    scale : float
        Font scale as passed to ``cv2.putText``.
    thickness : int
        Stroke thickness in pixels.

    Returns
    -------
    list of str
        At least one line (empty text gives ``[""]``).
    """
    lines: list[str] = []
    line = ""
    for word in text.split():
        candidate = f"{line} {word}".strip()
        if line and cv2.getTextSize(candidate, _FONT, scale, thickness)[0][0] > width_px:
            lines.append(line)
            line = word
        else:
            line = candidate
    lines.append(line)
    return lines


def _banner(width: int, layout: OverlayLayout) -> np.ndarray:
    """The banner strip, BGR uint8 of shape (banner_height_px, width, 3)."""
    strip = np.zeros((layout.banner_height_px, width, 3), dtype=np.uint8)
    strip[:] = _bgr(BANNER_RGB)
    scale = 1.0
    (text_w, text_h), _ = cv2.getTextSize(BANNER_TEXT, _FONT, scale, 2)
    while text_w > width - 20 and scale > 0.3:
        scale -= 0.05
        (text_w, text_h), _ = cv2.getTextSize(BANNER_TEXT, _FONT, scale, 2)
    origin = ((width - text_w) // 2, (layout.banner_height_px + text_h) // 2)
    cv2.putText(strip, BANNER_TEXT, origin, _FONT, scale, _bgr(BANNER_TEXT_RGB), 2, cv2.LINE_AA)
    return strip


def _text_panel(
    lines: Sequence[tuple[str, tuple[int, int, int] | None]], width: int, layout: OverlayLayout
) -> np.ndarray:
    """Rows of text, each optionally led by a colour swatch; BGR uint8."""
    height = layout.legend_row_px * max(len(lines), 1) + layout.legend_row_px // 2
    panel = np.zeros((height, width, 3), dtype=np.uint8)
    panel[:] = _bgr(PANEL_RGB)
    for row, (text, colour) in enumerate(lines):
        top = layout.legend_row_px // 4 + row * layout.legend_row_px
        x = 16
        if colour is not None:
            size = layout.legend_row_px // 2
            cv2.rectangle(panel, (x, top + 6), (x + size, top + 6 + size), _bgr(colour), -1)
            x += size + 14
        baseline = top + layout.legend_row_px // 2 + 10
        cv2.putText(panel, text, (x, baseline), _FONT, 0.7, (235, 235, 235), 1, cv2.LINE_AA)
    return panel


def finding_line(label: str, present: bool, volume_ml: float, laterality: str | None) -> str:
    """Return the legend text of one finding, such as ``"Intracranial hemorrhage (left): 8.46 mL"``.

    Parameters
    ----------
    label : str
        Finding label.
    present : bool
        Whether the finding is present.
    volume_ml : float
        Volume in mL.
    laterality : str or None
        ``"left"``, ``"right"``, ``"bilateral"`` or None.

    Returns
    -------
    str
        ASCII text (OpenCV's Hershey fonts draw ASCII only).
    """
    name = codes.finding_codes(label).segment_label
    side = f" ({laterality})" if laterality else ""
    if not present:
        return f"{name}: not detected ({volume_ml:.2f} mL)"
    return f"{name}{side}: {volume_ml:.2f} mL"


def render_key_slice(
    hu_slice: np.ndarray,
    masks: Sequence[np.ndarray],
    colours_rgb: Sequence[tuple[int, int, int]],
    legend: Sequence[str],
    caption: str,
    *,
    layout: OverlayLayout = OverlayLayout(),
) -> np.ndarray:
    """Render one slice in the brain window with coloured finding outlines and a legend.

    Parameters
    ----------
    hu_slice : numpy.ndarray
        float array of shape (rows, columns) in HU.
    masks : sequence of numpy.ndarray
        bool arrays of shape (rows, columns), one per finding.
    colours_rgb : sequence of tuple of int
        Outline colour (RGB, 0-255) of each mask.
    legend : sequence of str
        Legend line of each mask (ASCII).
    caption : str
        Extra legend line (slice number, algorithm).
    layout : OverlayLayout
        Sizes.

    Returns
    -------
    numpy.ndarray
        uint8 RGB image of shape (banner + scale x rows + legend, scale x
        columns, 3): banner on top, then the slice, then the legend.

    Raises
    ------
    ValueError
        If a mask does not have the slice's shape or the lists differ in length.

    References
    ----------
    PS3.3 C.11.2.1.2 (brain window: centre 40 HU, width 80 HU).
    """
    if not len(masks) == len(colours_rgb) == len(legend):
        raise ValueError("masks, colours and legend lines must have the same length")
    rows, columns = hu_slice.shape
    grey = apply_window(hu_slice, BRAIN_WINDOW)
    size = (columns * layout.scale, rows * layout.scale)
    grey = cv2.resize(grey, size, interpolation=cv2.INTER_LINEAR)
    image = cv2.cvtColor(grey, cv2.COLOR_GRAY2BGR)
    for mask, colour in zip(masks, colours_rgb, strict=True):
        mask = np.asarray(mask, dtype=bool)
        if mask.shape != (rows, columns):
            raise ValueError(f"mask shape {mask.shape} differs from slice shape {(rows, columns)}")
        if not mask.any():
            continue
        big = cv2.resize(mask.astype(np.uint8), size, interpolation=cv2.INTER_NEAREST)
        contours, _ = cv2.findContours(big, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_NONE)
        cv2.drawContours(image, contours, -1, _bgr(colour), layout.outline_px)
    lines: list[tuple[str, tuple[int, int, int] | None]] = [
        (text, colour) for text, colour in zip(legend, colours_rgb, strict=True)
    ]
    lines.append((caption, None))
    canvas = np.vstack([_banner(size[0], layout), image, _text_panel(lines, size[0], layout)])
    return cv2.cvtColor(canvas, cv2.COLOR_BGR2RGB)


#: Columns of the summary table: header and left edge as a fraction of the width.
SUMMARY_COLUMNS = (
    ("Finding", 0.0),
    ("Side", 0.42),
    ("Volume (mL)", 0.56),
    ("Probability", 0.72),
    ("Result", 0.87),
)


def finding_table_row(
    label: str, present: bool, volume_ml: float, laterality: str | None, probability: float | None
) -> tuple[str, str, str, str, str]:
    """Return the summary-table cells of one finding.

    Parameters
    ----------
    label : str
        Finding label.
    present : bool
        Whether the finding is present.
    volume_ml : float
        Volume in mL.
    laterality : str or None
        Side, when known.
    probability : float or None
        Probability in [0, 1], when the algorithm gives one.

    Returns
    -------
    tuple of str
        Finding, side, volume, probability, result (ASCII).
    """
    return (
        codes.finding_codes(label).segment_label,
        laterality or "-",
        f"{float(volume_ml):.2f}",
        "-" if probability is None else f"{float(probability):.2f}",
        "PRESENT" if present else "not detected",
    )


def render_summary(
    title: str,
    table: Sequence[tuple[tuple[str, ...], tuple[int, int, int] | None]],
    footer: Sequence[str],
    *,
    width: int = 1024,
    layout: OverlayLayout = OverlayLayout(),
) -> np.ndarray:
    """Render the summary image: banner, title, table of findings, footer.

    Parameters
    ----------
    title : str
        Title, for example ``"AI result (ICH): 1 finding(s) reported"``;
        wrapped over several lines when wider than the image.
    table : sequence of tuple
        (cells, swatch colour RGB or None) per table row; five cells are
        laid out in :data:`SUMMARY_COLUMNS`, one cell spans the row. An empty
        sequence draws no table.
    footer : sequence of str
        Lines after the table (algorithm, key slices, warning), each wrapped
        to the image width.
    width : int
        Image width in pixels.
    layout : OverlayLayout
        Sizes.

    Returns
    -------
    numpy.ndarray
        uint8 RGB image of shape (height, width, 3).
    """
    row_px = layout.legend_row_px
    margin, swatch = 16, row_px // 2
    title_lines = wrap_text(title, width - 2 * margin, thickness=2)
    footer_lines = [part for text in footer for part in wrap_text(text, width - 2 * margin)]
    body_rows = len(title_lines) + 1 + (len(table) + 1 if table else 0) + 1 + len(footer_lines)
    body = np.zeros((row_px * body_rows + row_px // 2, width, 3), dtype=np.uint8)
    body[:] = _bgr(PANEL_RGB)

    def put(text: str, x: int, row: int, bold: bool = False) -> None:
        baseline = row_px // 4 + row * row_px + row_px // 2 + 10
        cv2.putText(
            body, text, (x, baseline), _FONT, 0.7, (235, 235, 235), 2 if bold else 1, cv2.LINE_AA
        )

    for row, text in enumerate(title_lines):
        put(text, margin, row, bold=True)
    row = len(title_lines) + 1
    if table:
        left = margin + swatch + 14
        span = width - left - margin
        for header, fraction in SUMMARY_COLUMNS:
            put(header, left + int(fraction * span), row, bold=True)
        row += 1
        for cells, colour in table:
            if colour is not None:
                top = row_px // 4 + row * row_px + 6
                cv2.rectangle(
                    body, (margin, top), (margin + swatch, top + swatch), _bgr(colour), -1
                )
            if len(cells) == len(SUMMARY_COLUMNS):
                for cell, (_, fraction) in zip(cells, SUMMARY_COLUMNS, strict=True):
                    put(cell, left + int(fraction * span), row)
            else:
                put(" ".join(cells), left, row)
            row += 1
    row += 1
    for text in footer_lines:
        put(text, margin, row)
        row += 1
    canvas = np.vstack([_banner(width, layout), body])
    return cv2.cvtColor(canvas, cv2.COLOR_BGR2RGB)
