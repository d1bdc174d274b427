"""Many long edits, unattended: job files, a watched folder, a ledger, crash-safe resume, Ray.

Modules, one job each:
- `jobfile`: YAML job file -> `EditJob`, paths relative to the file, one-line errors;
- `confine`: where a job file may write (its folder, `--output-root`), links out of the watched folder;
- `claim`: claim files (owner host/pid/start time, heartbeat), exclusive hand-over, staleness;
- `spool`: the watched folder's layout, atomic claim out of the inbox, moves to done/ and failed/;
- `scanner`: which inbox files are complete (no *.part, stable size+mtime over two scans, video opens);
- `ledger`: SQLite (WAL) record of states, attempts, timings, memory, progress;
- `worker`: runs one claimed job: attempts, retries, done/failed/released;
- `watcher`: the loop (`longedit watch`); `batch`: `longedit run`; `status`: `longedit status`;
- `ray_backend`: attempts as Ray tasks; `runner`, `progress`: the engine seen from here.

The watched folder (`longedit watch DIR`):

    DIR/inbox/NAME.yaml       a job; `input` may be left out when DIR/inbox/NAME.mp4 (.mov, .mkv, ...) exists
    DIR/processing/NAME/      claimed: NAME.yaml, NAME.mp4 (if it was the companion), meta.json,
                              claim-*.json, work/ (checkpoints), the output being written
    DIR/done/NAME/            + NAME-edited.<ext> (unless `output` says otherwise) and report.json
    DIR/failed/NAME/          + error.json: message, traceback, timestamps, attempts, history
    DIR/ledger.sqlite         every transition; `longedit status DIR [--json]`
    DIR/tuned/KEY/            models tuned for jobs with `tune:` (one per clip, base model and settings)

Rules:
- A job file is claimed only when it and its video kept size and mtime over two scans `--settle`
  seconds apart and the video opens; `*.part`/`*.tmp`/hidden files are never looked at. Write big
  files under a temp name and rename them when complete, or copy the video before the job file.
- Paths in a job file are relative to the folder it was written in (the inbox), except `output` and
  `report`, which are relative to the job's own folder so results land in done/NAME/.
- Inputs are never modified or deleted: the job file and its companion video are moved (renamed,
  byte for byte) with the job; a video named by `input:` stays where it is.
- Claiming is an atomic rename; a job runs on one worker at a time across threads, processes and
  hosts sharing the folder. A job whose worker died (kill -9, reboot: its pid is gone on this host, or
  no heartbeat for `--stale-after` s from another host) resumes from its last checkpoint on the next
  scan of any watcher; SIGTERM checkpoints, releases the job and exits 0.
- Attempts (including ones lost to a dead worker) are counted; after `--max-attempts` the job goes to
  failed/. A `UserError` (bad job file, unreadable video, word not in the prompt) fails at once.
- A job writes only inside its own folder (or an `--output-root`), never over a file it did not create
  nor under the folder's own names; a job file or input linked out of DIR is refused unread, and job
  files over 64 KiB too (`confine`).
"""
