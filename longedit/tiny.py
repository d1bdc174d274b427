"""The built-in tiny random model (`--model tiny`): kept as a name; it lives in `longedit.random_models`."""

from longedit.random_models import (  # noqa: F401 - re-exports for existing imports
    ATTENTION_SHARPNESS,
    TINY_WORDS,
    build_tiny_components,
    build_tiny_tokenizer,
    write_tiny_tokenizer_files,
)
