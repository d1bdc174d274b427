"""`--quiet` for the libraries underneath: their warnings, log lines and progress bars off for a block.

transformers, diffusers and huggingface_hub each keep a process-wide verbosity and progress-bar switch
(transformers' "Writing model shards" bar on `save_pretrained`, its torchvision fallback notice at import);
`quiet_libraries` turns them down for the duration of a command and puts back what it found.
"""

from __future__ import annotations

import contextlib
import logging
import warnings
from collections.abc import Iterator


@contextlib.contextmanager
def quiet_libraries(quiet: bool = True) -> Iterator[None]:
    """Within the block (when `quiet`): Python warnings ignored, the libraries' loggers at ERROR and their
    progress bars disabled; everything restored on exit. A no-op when not `quiet`."""
    if not quiet:
        yield
        return
    import huggingface_hub.utils as hub
    from diffusers.utils import logging as diffusers_logging
    from transformers.utils import logging as transformers_logging

    libraries = (diffusers_logging, transformers_logging)
    verbosity = [library.get_verbosity() for library in libraries]
    bars = [library.is_progress_bar_enabled() for library in libraries]
    hub_bars_disabled = hub.are_progress_bars_disabled()
    other_loggers = {name: logging.getLogger(name) for name in ("accelerate", "huggingface_hub", "torch")}
    other_levels = {name: logger.level for name, logger in other_loggers.items()}
    for library in libraries:
        library.set_verbosity_error()
        library.disable_progress_bar()
    hub.disable_progress_bars()
    for logger in other_loggers.values():
        logger.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        for library, level, bar in zip(libraries, verbosity, bars):
            library.set_verbosity(level)
            if bar:
                library.enable_progress_bar()
        if not hub_bars_disabled:
            hub.enable_progress_bars()
        for name, logger in other_loggers.items():
            logger.setLevel(other_levels[name])
