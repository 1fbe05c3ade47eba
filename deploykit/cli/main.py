"""Entry point: the click group of subcommands, and error → exit-code mapping.

User errors (DeployKitError, bad usage) print one line on stderr and exit 2 with
no traceback; a failed parity check exits 1; anything else is a bug and keeps
its traceback.
"""

from __future__ import annotations

import sys

import click

from deploykit.cli import bench_cmd, compress_cmd, convert_cmd, demo_cmd, eval_cmd, export_cmd, inspect_cmd, profile_cmd

COMMANDS: list[click.Command] = [
    inspect_cmd.inspect,
    compress_cmd.compress,
    export_cmd.export,
    bench_cmd.bench,
    eval_cmd.eval_,
    demo_cmd.demo,
    profile_cmd.profile,
    convert_cmd.convert_weights,
]


@click.group(help="deploykit: compress CNNs for deployment (prune physically, fine-tune, export, benchmark).")
@click.version_option(package_name="deploykit")
def cli() -> None:
    """The deploykit command group."""


for _cmd in COMMANDS:
    cli.add_command(_cmd)


def main(argv: list[str] | None = None) -> int:
    """Run the CLI; returns the process exit code."""
    from deploykit.errors import DeployKitError, ParityError

    args = sys.argv[1:] if argv is None else argv
    try:
        rv = cli.main(args=args, prog_name="deploykit", standalone_mode=False)
    except click.exceptions.Exit as e:
        return e.exit_code
    except click.exceptions.Abort:
        sys.stderr.write("deploykit: aborted\n")
        return 130
    except click.UsageError as e:
        where = "deploykit" if e.ctx is None or e.ctx.info_name == "deploykit" else f"deploykit {e.ctx.info_name}"
        sys.stderr.write(f"{where}: error: {e.format_message()} (see --help)\n")
        return 2
    except DeployKitError as e:
        sys.stderr.write(f"deploykit: error: {e}\n")
        return e.exit_code
    except ParityError as e:
        sys.stderr.write(f"deploykit: {e}\n")
        return 1
    return rv if isinstance(rv, int) else 0


def entry() -> None:
    """Console-script entry point."""
    sys.exit(main())
