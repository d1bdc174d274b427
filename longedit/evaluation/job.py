"""Evaluate a finished edit job (`edit --eval`, `eval: true` in job files): the job's own regions and prompt.

A SAM2-tracked object is measured in its seed box(es), not its tracked masks (the engine keeps those at
latent resolution only); the report says so. A problem that makes the edit unmeasurable (e.g. an output
written at another size with --keep-size) gives a null with the reason instead of failing the finished edit.
"""

from __future__ import annotations

from longedit.config import EditJob
from longedit.errors import UserError
from longedit.evaluation.evaluate import EvalSettings, evaluate_videos
from longedit.evaluation.metric import missing


def settings_for_job(job: EditJob, clip: str | None = None) -> EvalSettings:
    """EvalSettings measuring `job.output` against `job.input` in the job's regions, with its edited prompt.

    The margin is the job's mask dilation plus eval's default 8 px (one latent cell at 512 px), since IRJS
    lets every latent cell an object touches change.
    """
    objects = [obj.model_copy(update={"track": None}) for obj in job.resolved_objects()]
    return EvalSettings(
        prompt=job.prompt,
        object_specs=objects,
        margin=job.mask_dilate + EvalSettings.margin,  # IRJS frees whole latent cells around the masks
        clip=clip,
        local_files_only=job.local_files_only,
    )


def evaluate_job(job: EditJob, clip: str | None = None) -> dict:
    """The eval report of a finished job, or a null with the reason when it cannot be measured."""
    try:
        report = evaluate_videos(job.input, job.output, settings_for_job(job, clip))
    except UserError as error:
        return missing(str(error))
    tracked = [obj.word for obj in job.resolved_objects() if obj.track == "sam2"]
    if tracked:
        report["notes"] = [f"'{word}' is measured in its seed box, not its SAM2 masks" for word in tracked]
    return report
