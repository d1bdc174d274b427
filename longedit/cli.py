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
    from longedit.commands import bench, demo, edit, jobs, masks

    for module in (edit, demo, masks, jobs, bench):
        module.register(app)


def main(argv: list[str] | None = None) -> int:
    """Entry point of the `longedit` script; returns the exit code."""
    _register_commands()
    try:
        result = app(args=argv, standalone_mode=False)
    except UserError as error:
        print(f"error: {error}", file=sys.stderr)
        return UserError.exit_code
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except SystemExit as exit_:  # typer/click --help and usage errors
        return int(exit_.code or 0)
    except typer.Exit as exit_:
        return exit_.exit_code
    except Exception as error:  # click usage errors carry their own exit code
        import click

        if isinstance(error, click.ClickException):
            error.show()
            return error.exit_code
        raise
    # click returns the exit code of typer.Exit / an interrupted command (130) instead of raising it
    return result if isinstance(result, int) else 0


if __name__ == "__main__":
    sys.exit(main())
