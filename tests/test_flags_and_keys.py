"""Every `longedit edit` flag has a job-file key of the same name (snake_case), and the other way round."""

import inspect

from longedit.commands.edit import edit
from longedit.config import EditJob

# Flags that steer how the command runs, not what the job is.
RUN_ONLY_FLAGS = {"work_dir", "progress"}
# Plural key <-> repeated flag.
RENAMED = {"object": "objects"}


def test_edit_flags_and_job_keys_match():
    flags = {RENAMED.get(name, name) for name in inspect.signature(edit).parameters} - RUN_ONLY_FLAGS
    keys = set(EditJob.model_fields)
    assert flags - keys == set(), "flags without a job-file key"
    assert keys - flags == set(), "job-file keys without a flag"
