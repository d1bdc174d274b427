"""Issue 26 item 5: the engine imports where `resource` and `fcntl` do not exist (Windows), and peak RSS is
bytes on every platform (`ru_maxrss` is bytes on macOS, KiB on Linux)."""

from __future__ import annotations

import subprocess
import sys
import textwrap

from longedit.memory import current_rss_bytes, peak_rss_bytes, ru_maxrss_bytes


def test_the_engine_and_the_tune_cache_import_without_resource_and_fcntl(tmp_path):
    """Run in a fresh interpreter where both modules are missing, as on Windows; the cache's lock still works."""
    script = textwrap.dedent(f"""
        import sys
        import filelock, psutil, torch  # third-party packages have their own Windows code paths: loaded first
        sys.modules["resource"] = None  # `import resource` raises ImportError, as on Windows
        sys.modules["fcntl"] = None
        import threading
        from pathlib import Path
        import longedit.engine, longedit.memory, longedit.jobs.html_report
        from longedit.tune import cache
        assert longedit.memory.peak_rss_bytes() > 0
        with cache._locked(Path({str(tmp_path / "x.lock")!r}), threading.Event()):
            pass
        print("imported")
    """)
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0 and result.stdout.strip() == "imported", result.stderr[-3000:]


def test_ru_maxrss_is_read_in_the_units_of_each_platform():
    assert ru_maxrss_bytes(1000, "linux") == 1024_000
    assert ru_maxrss_bytes(1000, "darwin") == 1000  # macOS reports bytes
    assert ru_maxrss_bytes(1000, "freebsd14") == 1024_000


def test_the_peak_rss_is_bytes_and_at_least_the_current_rss():
    current, peak = current_rss_bytes(), peak_rss_bytes()
    assert 10 * 2**20 < current <= peak < 64 * 2**30
