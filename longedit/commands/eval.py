"""`longedit eval`: the paper's metrics (and weights-free ones) of an edit, as a summary and a JSON file."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated, Optional

import typer

from longedit.atomic import write_json
from longedit.errors import UserError


def _check_json_path(path: Path, inputs: tuple[Path, Path]) -> None:
    """The JSON file's folder must exist and be writable, and it must not overwrite an input."""
    if path.is_dir():
        raise UserError(f"--json '{path}' is a folder", "give a file path such as eval.json")
    if not path.parent.resolve().is_dir():
        raise UserError(f"cannot write --json '{path}': folder '{path.parent}' does not exist", "create it first")
    if not os.access(path.parent.resolve(), os.W_OK):
        raise UserError(f"cannot write --json '{path}': folder '{path.parent}' is not writable", "choose another path")
    if any(path.resolve() == p.resolve() for p in inputs):
        raise UserError(f"--json '{path}' is one of the videos", "give another file name")


def _fmt(entry: dict, digits: int = 4) -> str:
    value = entry.get("value")
    return f"{value:.{digits}f}" if isinstance(value, float) else f"n/a ({entry['reason']})"


def summary_lines(report: dict) -> list[str]:
    """A short human summary of an eval report."""
    background, temporal, clip = report["background"], report["temporal"], report["clip"]
    lines = [
        f"{report['frames']} frames {report['width']}x{report['height']}, regions of {', '.join(report['words'])} "
        f"(margin {report['margin_px']} px)"
        + (f"; source {report['source_cropped']} to match the edit" if report.get("source_cropped") else ""),
        f"  background PSNR {_fmt(background['psnr'], 2)} dB, SSIM {_fmt(background['ssim'])}, LPIPS {_fmt(background['lpips'])}",
    ]
    if "inside" in temporal:
        for where in ("inside", "outside"):
            entry = temporal[where]
            if entry["value"] is None:
                lines.append(f"  temporal MAD {where}: n/a ({entry['reason']})")
                continue
            relative = entry["relative"]
            ratio = f"{relative:.3f}x the source's" if relative is not None else f"source static: {entry['relative_reason']}"
            lines.append(f"  temporal MAD {where} the regions: {entry['value']:.4f} ({ratio})")
    else:
        lines.append(f"  temporal MAD: n/a ({temporal['reason']})")
    consistency, score = clip["frame_consistency"], clip["clip_score"]
    if consistency["value"] is None and score["value"] is None and consistency["reason"] == score["reason"]:
        lines.append(f"  CLIP metrics: n/a ({consistency['reason']})")
    else:
        lines.append(f"  CLIP frame consistency {_fmt(consistency)}, CLIP score {_fmt(score, 2)}")
    if "pickscore" in clip:
        lines.append(f"  PickScore {_fmt(clip['pickscore'], 2)}")
    for word, entry in report["placement"].items():
        lines.append(f"  placement of '{word}': {_fmt(entry, 3)}")
    for name, entry in report.get("relations", {}).items():
        found = f" ({entry['conditional']:.3f} of the frames where both are found)" if entry.get("conditional") is not None else ""
        lines.append(f"  relation '{name}' holds in: {_fmt(entry, 3)}{found}")
    return lines


def eval_command(
    source: Annotated[Path, typer.Argument(help="The source video.", show_default=False)],
    edited: Annotated[Path, typer.Argument(help="The edited video (same frames and size, or an odd-size source's edit cropped to even; any container).", show_default=False)],
    prompt: Annotated[str, typer.Option(help="The edited prompt (for the CLIP score).")] = "",
    object_: Annotated[
        Optional[list[str]],
        typer.Option(
            "--object",
            help="WORD=x0,y0,x1,y1[@FRAME]: an edited object's region in source pixels; repeat @FRAME for "
            "keyframes, repeat WORD for more objects. WORD alone takes its region from --masks.",
            show_default=False,
        ),
    ] = None,
    masks: Annotated[Optional[Path], typer.Option(help="Folder of masks DIR/WORD/000000.png (from `longedit masks`).")] = None,
    margin: Annotated[int, typer.Option(help="Grow the regions by this many pixels before measuring the background.")] = 8,
    clip: Annotated[Optional[str], typer.Option(help="CLIP model (folder or hub id) for frame consistency and CLIP score.")] = None,
    pickscore: Annotated[
        Optional[str], typer.Option(help="PickScore model (folder or hub id, e.g. yuvalkirstain/PickScore_v1) for the prompt's PickScore.")
    ] = None,
    pickscore_processor: Annotated[
        Optional[str],
        typer.Option(help="Where PickScore's processor and tokenizer live if not beside its weights (laion/CLIP-ViT-H-14-laion2B-s32B-b79K)."),
    ] = None,
    lpips: Annotated[str, typer.Option(help="LPIPS net: alex, vgg, squeeze or none.")] = "alex",
    detector: Annotated[
        Optional[str], typer.Option(help="'toy' (the toy world's detector) or an open-vocabulary detection model (folder or hub id).")
    ] = None,
    local_files_only: Annotated[bool, typer.Option("--local-files-only", help="Never download weights.")] = False,
    device: Annotated[str, typer.Option(help="Device for the CLIP model: cpu, cuda, cuda:N.")] = "cpu",
    json_path: Annotated[Optional[Path], typer.Option("--json", help="Write every metric (per-frame lists, nulls with reasons) here.")] = None,
) -> None:
    """Measure an edit: background PSNR/SSIM/LPIPS, temporal consistency, CLIP metrics and placement."""
    from longedit.evaluation import EvalSettings, evaluate_videos

    if json_path is not None:
        _check_json_path(json_path, (source, edited))
    settings = EvalSettings(
        prompt=prompt,
        objects=list(object_ or []),
        masks=masks,
        margin=margin,
        clip=clip,
        pickscore=pickscore,
        pickscore_processor=pickscore_processor,
        lpips=lpips,
        detector=detector,
        local_files_only=local_files_only,
        device=device,
    )
    report = evaluate_videos(source, edited, settings)
    if json_path is not None:
        write_json(json_path, report, what="eval report")
    for line in summary_lines(report):
        typer.echo(line)
    if json_path is not None:
        typer.echo(f"wrote {json_path}")


def register(app: typer.Typer) -> None:
    """Add this module's commands to the app."""
    app.command("eval")(eval_command)
