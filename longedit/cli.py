"""`longedit` command line: one typer app; each subcommand lives in `longedit/commands/<name>.py`.

Every command turns a `UserError` into a one-line message on stderr and exit code 2 (no traceback).
"""

from __future__ import annotations

import sys

import typer

from longedit.errors import UserError

app = typer.Typer(
    name="longedit",
    help="Edit long videos with text (ReAtCo + windowed co-denoising) on one GPU, one job or a night of them.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,  # help texts use [brackets] for defaults, which rich would eat as markup
)


def _register_commands() -> None:
    from longedit.commands import bench, demo, edit, eval, jobs, masks, tune

    for module in (edit, tune, demo, masks, jobs, bench, eval):
        module.register(app)


def _click_exception() -> type[Exception]:
    """The `ClickException` class typer raises: click's own (typer < 0.29) or typer's vendored copy
    (typer >= 0.29, not a subclass of click's). Found through typer's public `BadParameter`."""
    return next(cls for cls in typer.BadParameter.__mro__ if cls.__name__ == "ClickException")


def main(argv: list[str] | None = None) -> int:
    """Entry point of the `longedit` script; returns the exit code."""
    _register_commands()
    from longedit.commands.edit import optional_preview_value

    argv = optional_preview_value(list(sys.argv[1:] if argv is None else argv))
    try:
        result = app(args=argv, prog_name="longedit", standalone_mode=False)
    except UserError as error:
        print(f"error: {error}", file=sys.stderr)
        return UserError.exit_code
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except typer.Abort as abort:  # click-based typer turns Ctrl-C (and EOF at a prompt) into Abort
        if isinstance(abort.__context__, KeyboardInterrupt):
            print("interrupted", file=sys.stderr)
            return 130
        print("aborted", file=sys.stderr)
        return 1
    except SystemExit as exit_:  # --help
        return int(exit_.code or 0)
    except typer.Exit as exit_:
        return exit_.exit_code
    except _click_exception() as error:  # usage errors: click's usage line + one error line, exit 2
        error.show()
        return error.exit_code
    # click returns the exit code of typer.Exit / an interrupted command (130) instead of raising it
    return result if isinstance(result, int) else 0


if __name__ == "__main__":
    sys.exit(main())
