"""The one exception type for errors a user can cause and fix."""


class PhenolensError(Exception):
    """A user-fixable problem: bad file, missing column, wrong channel count, no controls.

    The message must name the file or column at fault and say what to do, in one line.
    The CLI prints it without a traceback and exits with status 2.
    """

    exit_code = 2
