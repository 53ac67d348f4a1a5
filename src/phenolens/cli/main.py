"""Entry point of the `phenolens` command.

User errors (PhenolensError) print one line and exit with status 2; `--debug` shows the traceback.
Command groups live in sibling modules and are mounted here.
"""

from __future__ import annotations

import sys

import typer

from phenolens.core.errors import PhenolensError

app = typer.Typer(
    name="phenolens",
    help="Interpret deep networks on cell-profiling, microscopy and ultrasonic data.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

_state = {"debug": False}


@app.callback()
def main(debug: bool = typer.Option(False, "--debug", help="Show full tracebacks and debug logs.")) -> None:
    """phenolens: profiles, images, SIGN inference graphs, counterfactuals and echoes."""
    _state["debug"] = debug
    if debug:
        from phenolens.core.logging import set_level

        set_level("DEBUG")


def _mount() -> None:
    from phenolens.cli import counterfactual, data, demo, echoes, images, profile, report, sign
    from phenolens.cli.options import use_plain_metavars

    app.add_typer(data.app, name="data")
    app.add_typer(images.app, name="images")
    app.add_typer(counterfactual.app, name="counterfactual")
    app.add_typer(echoes.app, name="echoes")
    app.add_typer(profile.app, name="profile")
    app.add_typer(sign.app, name="sign")
    app.add_typer(report.app, name="report")
    app.command("demo")(demo.demo)
    app.command("train", help="Alias of `phenolens images train`.")(images.train)
    app.command("explain", help="Alias of `phenolens images explain`.")(images.explain)
    use_plain_metavars(app)


_mount()


def run(argv: list[str] | None = None) -> int:
    """Run the CLI with `argv` (default: sys.argv); return the exit status (also used by tests).

    Parameters
    ----------
    argv : list of str, optional
        The arguments after ``phenolens``.

    Returns
    -------
    int
        0 on success, 2 for a user error (one line on stderr), 1 when aborted, or a usage error's status.
    """
    args = list(sys.argv[1:] if argv is None else argv)
    try:
        status = app(args=args, prog_name="phenolens", standalone_mode=False)
    except PhenolensError as error:
        if _state["debug"] or "--debug" in args:
            raise
        line = "\\n".join(str(error).splitlines())  # one line, even when a name the user gave holds a line break
        print(f"phenolens: error: {line}", file=sys.stderr)
        return PhenolensError.exit_code
    except typer.Abort:
        print("phenolens: aborted", file=sys.stderr)
        return 1
    except typer.exceptions.TyperException as error:  # usage errors: unknown command, bad option
        error.show()
        return error.exit_code
    return status if isinstance(status, int) else 0


def entry() -> None:
    """The ``phenolens`` console script: run the CLI and exit with its status."""
    sys.exit(run())
