"""``dicom-node users``: dashboard users and their login lockouts."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import TYPE_CHECKING, Annotated

import typer

from dicom_node.cli.common import ConfigOption, JsonOption, open_session, settings_or_exit

if TYPE_CHECKING:
    from sqlalchemy.orm import Session

    from dicom_node.config import Settings

users_app = typer.Typer(help="Manage dashboard users.", no_args_is_help=True)


PasswordStdinOption = Annotated[
    bool,
    typer.Option("--password-stdin", help="Read the password from the first line of stdin."),
]


def _read_password(password_stdin: bool) -> str:
    import sys

    if password_stdin:
        return sys.stdin.readline().rstrip("\r\n")
    return typer.prompt("Password", hide_input=True, confirmation_prompt=True)


def _change_users(settings: Settings, change: Callable[[Session], object]) -> None:
    """Run ``change`` in one committed transaction; a UserError exits 1 with its message.

    Raises
    ------
    typer.Exit
        Code 1 when ``change`` raises :class:`~dicom_node.users.UserError`.
    """
    from dicom_node.db.engine import make_engine, make_session_factory
    from dicom_node.users import UserError

    session_factory = make_session_factory(make_engine(settings.storage.url))
    try:
        with session_factory.begin() as session:
            change(session)
    except UserError as err:
        typer.echo(f"error: {err}", err=True)
        raise typer.Exit(1) from err


@users_app.command("add")
def users_add(
    username: Annotated[str, typer.Argument(help="User name (letters, digits, . _ @ -).")],
    role: Annotated[str, typer.Option(help="admin (requeue, cancel, configuration) or viewer.")],
    config: ConfigOption = None,
    password_stdin: PasswordStdinOption = False,
) -> None:
    """Create a dashboard user; the password is prompted for (or read from stdin), hashed."""
    from dicom_node.users import create_user

    settings = settings_or_exit(config)
    password = _read_password(password_stdin)
    _change_users(settings, lambda session: create_user(session, username, password, role))
    typer.echo(f"user {username} added ({role})")


@users_app.command("set-password")
def users_set_password(
    username: Annotated[str, typer.Argument(help="An existing user.")],
    config: ConfigOption = None,
    password_stdin: PasswordStdinOption = False,
) -> None:
    """Set a new password for a dashboard user."""
    from dicom_node.users import set_password

    settings = settings_or_exit(config)
    password = _read_password(password_stdin)
    _change_users(settings, lambda session: set_password(session, username, password))
    typer.echo(f"password of {username} changed")


@users_app.command("remove")
def users_remove(
    username: Annotated[str, typer.Argument(help="An existing user.")],
    config: ConfigOption = None,
) -> None:
    """Delete a dashboard user (their sessions end at their next request)."""
    from dicom_node.users import delete_user

    settings = settings_or_exit(config)
    _change_users(settings, lambda session: delete_user(session, username))
    typer.echo(f"user {username} removed")


@users_app.command("unlock")
def users_unlock(
    username: Annotated[
        str, typer.Argument(help="The user name whose login lockout to lift (known or not).")
    ],
    address: Annotated[
        str | None, typer.Option(help="Also lift the lockout of this client address.")
    ] = None,
    config: ConfigOption = None,
) -> None:
    """Lift a login lockout (too many failed logins) now and forget the failures; audited."""
    import getpass

    from dicom_node import login_throttle
    from dicom_node.db.engine import make_engine, make_session_factory

    settings = settings_or_exit(config)
    try:
        by = f"{getpass.getuser()} (dicom-node users unlock)"
    except (KeyError, OSError):
        by = "dicom-node users unlock"
    session_factory = make_session_factory(make_engine(settings.storage.url))
    with session_factory.begin() as session:
        lifted = login_throttle.unlock(session, login_throttle.USER, username, by=by)
        typer.echo(f"login lockout of {username} {'lifted' if lifted else 'was not in place'}")
        if address:
            lifted = login_throttle.unlock(session, login_throttle.ADDRESS, address, by=by)
            typer.echo(f"login lockout of address {address} "
                       f"{'lifted' if lifted else 'was not in place'}")  # fmt: skip


@users_app.command("list")
def users_list(config: ConfigOption = None, as_json: JsonOption = False) -> None:
    """List dashboard users with their role and last login."""
    from dicom_node.users import list_users, user_summary

    settings = settings_or_exit(config)
    with open_session(settings) as session:
        rows = [user_summary(u) for u in list_users(session)]
    if as_json:
        typer.echo(json.dumps(rows, indent=2))
        return
    typer.echo(f"{'USER':<24} {'ROLE':<7} LAST LOGIN")
    for r in rows:
        typer.echo(f"{r['username']:<24} {r['role']:<7} {r['last_login_at'] or '-'}")
