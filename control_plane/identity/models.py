"""The identity routes' request and answer bodies (msgspec Structs at the boundary)."""

from __future__ import annotations

from typing import Annotated, Literal

import msgspec

__all__ = ["Email", "OrganizationRef", "PasswordChange", "PasswordReset", "PasswordResetRequest",
           "PasswordWasReset", "ResetRequested", "SessionView", "SignIn", "SignUp", "SignUpAccepted",
           "SignedOut", "UserRef", "Verified", "VerifyEmail"]

Email = Annotated[str, msgspec.Meta(pattern=r"^\s*[^@\s]{1,64}@[^@\s]{1,255}\s*$", max_length=320)]
Password = Annotated[str, msgspec.Meta(min_length=1, max_length=1024)]
Token = Annotated[str, msgspec.Meta(min_length=1, max_length=200)]


class SignUp(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    email: Email
    password: Password
    name: Annotated[str, msgspec.Meta(max_length=200)] = ""
    organization_name: Annotated[str, msgspec.Meta(min_length=1, max_length=200)] | None = None
    """Default: "<name or email>'s organization"."""


class SignUpAccepted(msgspec.Struct, kw_only=True):
    """The same answer whether or not the email already had an account (the mail differs)."""

    object: Literal["signup"] = "signup"
    email: str
    status: Literal["verification_sent"] = "verification_sent"


class VerifyEmail(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    token: Token


class UserRef(msgspec.Struct, kw_only=True):
    id: str
    object: Literal["user"] = "user"
    email: str
    name: str
    email_verified: bool


class Verified(msgspec.Struct, kw_only=True):
    object: Literal["email.verified"] = "email.verified"
    user: UserRef


class SignIn(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    email: Email
    password: Password


class OrganizationRef(msgspec.Struct, kw_only=True):
    id: str
    name: str
    role: str


class SessionView(msgspec.Struct, kw_only=True):
    object: Literal["session"] = "session"
    id: str
    provider: str
    user: UserRef
    organizations: list[OrganizationRef]
    expires_at: int | None = None
    """Unix seconds: the absolute end of a local session."""
    csrf_token: str | None = None
    """Send it as `X-CSRF-Token` with every cookie-authenticated write."""


class SignedOut(msgspec.Struct, kw_only=True):
    object: Literal["session.signed_out"] = "session.signed_out"
    sessions_ended: int


class PasswordChange(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    current_password: Password
    new_password: Password


class PasswordResetRequest(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    email: Email


class PasswordReset(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    token: Token
    password: Password


class ResetRequested(msgspec.Struct, kw_only=True):
    """The same answer whether or not an account has the email."""

    object: Literal["password_reset"] = "password_reset"
    email: str
    status: Literal["mail_sent_if_account_exists"] = "mail_sent_if_account_exists"


class PasswordWasReset(msgspec.Struct, kw_only=True):
    object: Literal["password.reset"] = "password.reset"
    user: UserRef
    sessions_ended: int
