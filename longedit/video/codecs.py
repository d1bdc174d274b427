"""Output codecs: which encoder, pixel format, quality and container each `--codec` writes, checked up front.

`output_format` turns the job's `codec`, `pix_fmt` and `crf` and the output's suffix into an `OutputFormat`
or a one-line `UserError` (a codec the container cannot hold, a pixel format the codec cannot write, a CRF
for a codec without one, an encoder this PyAV build lacks), before any decoding. `pixel_format_note` says
when a source with more colour (4:2:2/4:4:4 chroma or more than 8 bits) is written as 8-bit 4:2:0.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import av

from longedit.errors import UserError

CODEC_NAMES = ("h264", "h265", "prores", "ffv1", "vp9", "png")
_YUV_8_10 = ("yuv420p", "yuv422p", "yuv444p", "yuv420p10le", "yuv422p10le", "yuv444p10le")


@dataclass(frozen=True)
class _Codec:
    """What one `--codec` is: encoder, pixel formats (first = default), CRF range/default, containers."""

    encoder: str
    pix_fmts: tuple[str, ...]
    suffixes: tuple[str, ...]  # () = a folder of numbered frames
    crf: tuple[int, int, int] | None = None  # (lowest, highest, default)
    options: dict[str, str] = field(default_factory=dict)


CODECS: dict[str, _Codec] = {
    "h264": _Codec("libx264", _YUV_8_10, (".mp4", ".mov", ".mkv"), (0, 51, 18)),
    "h265": _Codec("libx265", _YUV_8_10, (".mp4", ".mov", ".mkv"), (0, 51, 20), {"x265-params": "log-level=error"}),
    "prores": _Codec("prores_ks", ("yuv422p10le", "yuv444p10le"), (".mov",), None, {"vendor": "apl0"}),
    "ffv1": _Codec("ffv1", ("yuv444p", "yuv420p", "yuv422p", "yuv420p10le", "yuv422p10le", "yuv444p10le"), (".mkv",),
                   None, {"level": "3"}),
    "vp9": _Codec("libvpx-vp9", ("yuv420p", "yuv444p"), (".webm", ".mkv"), (0, 63, 31),
                  {"b:v": "0", "row-mt": "1", "deadline": "good", "cpu-used": "4"}),
    "png": _Codec("png", ("rgb24",), ()),
}

#: ProRes profile per pixel format: 3 = 422 HQ, 4 = 4444.
_PRORES_PROFILE = {"yuv422p10le": "3", "yuv444p10le": "4"}


@dataclass(frozen=True)
class OutputFormat:
    """What an output is written as: `codec` (a CODECS name), FFmpeg `encoder`, `pix_fmt`, `crf`
    (None where the codec has none) and encoder `options`; `folder` for numbered PNG frames."""

    codec: str
    encoder: str
    pix_fmt: str
    crf: int | None
    options: dict[str, str]

    @property
    def bits_per_pixel(self) -> float:
        """A generous size estimate for the disk check: compressed codecs ~2 (CRF 18 takes 0.1-1), ProRes HQ
        ~4 and 4444 ~6 (Apple's data rates), lossless FFV1 and PNG up to the raw size of their pixel format."""
        if self.codec in ("h264", "h265", "vp9"):
            return 2.0 * (1.5 if "10" in self.pix_fmt else 1.0)
        if self.codec == "prores":
            return 6.0 if "444" in self.pix_fmt else 4.0
        return float(av.VideoFormat(self.pix_fmt).bits_per_pixel)

    @property
    def folder(self) -> bool:
        return self.codec == "png"

    def describe(self) -> str:
        """e.g. 'h264 yuv420p crf 18', 'prores yuv422p10le', 'png rgb24 frames'."""
        crf = f" crf {self.crf}" if self.crf is not None else ""
        return f"{self.codec} {self.pix_fmt}{crf}" + (" frames" if self.folder else "")


def default_codec(path: Path) -> str:
    """The codec an output gets without `--codec`: VP9 for `.webm` (the only video codec it holds), else H.264."""
    return "vp9" if Path(path).suffix.lower() == ".webm" else "h264"


def has_encoder(name: str) -> bool:
    """Whether the FFmpeg bundled with PyAV can encode with `name`."""
    try:
        av.codec.Codec(name, "w")
    except (av.codec.codec.UnknownCodecError, ValueError):
        return False
    return True


def _check_container(path: Path, codec: str, spec: _Codec) -> None:
    suffix = path.suffix.lower()
    if not spec.suffixes:
        if suffix in (".mp4", ".mov", ".mkv", ".webm", ".png"):
            raise UserError(f"--codec png writes a folder of numbered frames, not '{path.name}'",
                            f"name the output folder without a suffix, e.g. -o {path.with_suffix('').name}_frames")
        return
    if suffix not in spec.suffixes:
        raise UserError(f"--codec {codec} cannot be written to a '{suffix or path.name}' file",
                        f"name the output with {' or '.join(spec.suffixes)}, or pick another --codec")


def _check_pix_fmt(codec: str, spec: _Codec, pix_fmt: str | None) -> str:
    if pix_fmt is None:
        return spec.pix_fmts[0]
    if pix_fmt not in spec.pix_fmts:
        raise UserError(f"--codec {codec} cannot write --pix-fmt {pix_fmt}", f"use one of {', '.join(spec.pix_fmts)}")
    return pix_fmt


def _check_crf(codec: str, spec: _Codec, crf: int | None) -> int | None:
    if spec.crf is None:
        if crf is not None:
            with_crf = ", ".join(name for name, c in CODECS.items() if c.crf is not None)
            raise UserError(f"--crf does not apply to --codec {codec} (it has no constant-quality setting)",
                            f"drop --crf; it is for {with_crf}")
        return None
    low, high, default = spec.crf
    if crf is None:
        return default
    if not low <= crf <= high:
        raise UserError(f"--crf {crf} is outside {low}..{high} for --codec {codec}", f"lower is better quality; {default} is the default")
    return crf


def output_format(path: str | Path, codec: str | None = None, pix_fmt: str | None = None, crf: int | None = None) -> OutputFormat:
    """The checked output format of `path` (one line UserError for anything that cannot be written)."""
    path = Path(path)
    codec = codec or default_codec(path)
    spec = CODECS.get(codec)
    if spec is None:
        raise UserError(f"unknown --codec '{codec}'", f"use one of {', '.join(CODECS)}")
    _check_container(path, codec, spec)
    pix_fmt = _check_pix_fmt(codec, spec, pix_fmt)
    crf = _check_crf(codec, spec, crf)
    if not has_encoder(spec.encoder):
        raise UserError(f"--codec {codec} needs the FFmpeg encoder '{spec.encoder}', which this PyAV build lacks",
                        "pick another --codec, or install a PyAV/FFmpeg build that has it")
    options = dict(spec.options)
    if crf is not None:
        options["crf"] = str(crf)
    if codec == "prores":
        options["profile"] = _PRORES_PROFILE[pix_fmt]
    return OutputFormat(codec=codec, encoder=spec.encoder, pix_fmt=pix_fmt, crf=crf, options=options)


def _depth_and_chroma(pix_fmt: str) -> tuple[int, int] | None:
    """(bits per component, chroma samples per 2x2 block: 1 for 4:2:0, 2 for 4:2:2, 4 for 4:4:4/RGB)."""
    try:
        fmt = av.VideoFormat(pix_fmt)
    except (ValueError, av.FFmpegError):
        return None
    bits = max((c.bits for c in fmt.components), default=8)
    if fmt.is_rgb or len(fmt.components) < 3:
        return bits, 4
    return bits, 4 // ((64 // fmt.chroma_width(64)) * (64 // fmt.chroma_height(64)))


def _holds(written: tuple[int, int] | None, source: tuple[int, int]) -> bool:
    return written is not None and written[0] >= source[0] and written[1] >= source[1]


def pixel_format_note(source_pix_fmt: str | None, output: OutputFormat) -> str | None:
    """A note when the source holds more bits or chroma than the output keeps (e.g. 10-bit 4:4:4 -> 8-bit 4:2:0)."""
    if not source_pix_fmt:
        return None
    source, written = _depth_and_chroma(source_pix_fmt), _depth_and_chroma(output.pix_fmt)
    if source is None or written is None or _holds(written, source):
        return None
    keep = [f for f in CODECS[output.codec].pix_fmts if _holds(_depth_and_chroma(f), source)]
    hint = f"give --pix-fmt {keep[0]} to keep it" if keep else "give --codec ffv1 or prores with --pix-fmt yuv444p10le to keep more"
    return f"the source is {source_pix_fmt}; the output is written as {output.pix_fmt} ({hint})"
