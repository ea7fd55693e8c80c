"""`nx backends|models|prices|routes|orgs|projects|members|users ...`: the management API's
operations for headless operators, run against the database with the same domain services.

Options are derived from the same msgspec bodies the REST API takes (`--base-url`, `--api-key-env`,
...), so the two never drift: lists are comma-separated, nested objects (`--capabilities`,
`--price`) are JSON, and `null` clears an optional field. After a routing change this node's Envoy
files are re-rendered and its sidecar refreshed at once; other nodes follow within a second.
"""

from __future__ import annotations

import argparse
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import msgspec
from sqlalchemy.ext.asyncio import AsyncConnection

from control_plane.domain import admin_keys, model_admin, orgs, projects, routing
from control_plane.domain.route_health import route_health
from core.secrets import load_secrets

__all__ = ["OPS", "Op", "add_manage_commands", "body_from_args"]

Conn = AsyncConnection
Fn = Callable[[Conn, argparse.Namespace, Any, Any], Awaitable[Any]]


@dataclass(frozen=True)
class Op:
    fn: Fn
    body: type[msgspec.Struct] | None = None
    target: str | None = None
    """Name of the positional argument (an id or alias), if any."""
    org: bool = False
    extra: tuple[str, ...] = ()
    """Required plain options that are not part of the body (e.g. `--model` for a list)."""
    effect: str = ""
    """'routing': re-render Envoy and refresh the sidecar; 'projects': refresh the sidecar."""


A = "cli"
OPS: dict[str, dict[str, Op]] = {
    "backends": {
        "list": Op(lambda c, a, b, s: routing.list_backends(c)),
        "get": Op(lambda c, a, b, s: routing.get_backend(c, a.target), target="backend_id"),
        "create": Op(lambda c, a, b, s: routing.create_backend(c, s, b, A), routing.BackendCreate,
                     effect="routing"),
        "update": Op(lambda c, a, b, s: routing.update_backend(c, s, a.target, b, A), routing.BackendPatch,
                     target="backend_id", effect="routing"),
        "disable": Op(lambda c, a, b, s: routing.disable_backend(c, s, a.target, A), target="backend_id",
                      effect="routing"),
    },
    "models": {
        "list": Op(lambda c, a, b, s: model_admin.list_models(c)),
        "get": Op(lambda c, a, b, s: model_admin.get_model(c, a.target), target="model_id"),
        "create": Op(lambda c, a, b, s: model_admin.create_model(c, b, A), model_admin.ModelCreate,
                     effect="routing"),
        "update": Op(lambda c, a, b, s: model_admin.update_model(c, a.target, b, A), model_admin.ModelPatch,
                     target="model_id", effect="routing"),
    },
    "prices": {
        "list": Op(lambda c, a, b, s: model_admin.list_prices(c, a.model), extra=("model",)),
        "add": Op(lambda c, a, b, s: model_admin.add_price(c, b, A), model_admin.PriceCreate,
                  effect="routing"),
    },
    "routes": {
        "list": Op(lambda c, a, b, s: routing.list_routes(c)),
        "set": Op(lambda c, a, b, s: routing.set_route(c, a.target, b, A), routing.RouteSet, target="alias",
                  effect="routing"),
        "delete": Op(lambda c, a, b, s: routing.delete_route(c, a.target, A), target="alias",
                     effect="routing"),
        # The targets' passive health, from Redis or from each adapter of this node.
        "health": Op(lambda c, a, b, s: route_health(s, load_secrets(s).internal_token)),
    },
    "orgs": {
        "list": Op(lambda c, a, b, s: orgs.list_orgs(c)),
        "get": Op(lambda c, a, b, s: orgs.get_org(c, a.target), target="org_id"),
        "create": Op(lambda c, a, b, s: orgs.create_org(c, b, A), orgs.OrgCreate, effect="projects"),
        "update": Op(lambda c, a, b, s: orgs.update_org(c, a.target, b, A), orgs.OrgPatch, target="org_id"),
    },
    "projects": {
        "list": Op(lambda c, a, b, s: projects.list_projects(c, a.org), org=True),
        "get": Op(lambda c, a, b, s: projects.get_project(c, a.org, a.target), target="project_id", org=True),
        "create": Op(lambda c, a, b, s: projects.create_project(c, a.org, b, A), projects.ProjectCreate,
                     org=True, effect="projects"),
        "update": Op(lambda c, a, b, s: projects.update_project(c, a.org, a.target, b, A),
                     projects.ProjectPatch, target="project_id", org=True, effect="projects"),
    },
    "members": {
        "list": Op(lambda c, a, b, s: orgs.list_members(c, a.org), org=True),
        "add": Op(lambda c, a, b, s: orgs.add_member(c, a.org, b, A), orgs.MemberCreate, org=True),
        "update": Op(lambda c, a, b, s: orgs.update_member(c, a.org, a.target, b, A), orgs.MemberPatch,
                     target="user_id", org=True),
        "remove": Op(lambda c, a, b, s: orgs.remove_member(c, a.org, a.target, A), target="user_id",
                     org=True),
    },
    "users": {
        "list": Op(lambda c, a, b, s: orgs.list_users(c)),
        "get": Op(lambda c, a, b, s: orgs.get_user(c, a.target), target="user_id"),
        "create": Op(lambda c, a, b, s: orgs.create_user(c, b, A), orgs.UserCreate),
    },
}

OPS["admin-keys"] = {
    "list": Op(lambda c, a, b, s: admin_keys.list_admin_keys(c, a.org), org=True),
    # An organization's first admin key, for its own REST API (docs/organizations.md); shown once.
    "create": Op(lambda c, a, b, s: admin_keys.create_admin_key(c, a.org, A, b, load_secrets(s).key_pepper),
                 admin_keys.AdminKeyCreate, org=True),
}

HELP = {"admin-keys": "manage an organization's admin keys (nx_admin_...)",
        "backends": "manage model backends", "models": "manage models",
        "prices": "append and list price cards",
        "routes": "manage aliases and route groups (targets, weights, fallbacks: docs/routing.md)",
        "orgs": "manage organizations",
        "projects": "manage an organization's projects", "members": "manage an organization's members",
        "users": "manage users"}


def _kind(t: msgspec.inspect.Type) -> str:
    if isinstance(t, msgspec.inspect.UnionType):
        t = next(x for x in t.types if not isinstance(x, msgspec.inspect.NoneType))
    if isinstance(t, (msgspec.inspect.ListType, msgspec.inspect.SetType)):
        # A list of objects (a route group's targets) is given as JSON.
        return "json" if isinstance(t.item_type, msgspec.inspect.StructType) else "list"
    if isinstance(t, (msgspec.inspect.StructType, msgspec.inspect.DictType)):
        return "json"
    return "scalar"


def add_manage_commands(sub: Any) -> None:
    for group, ops in OPS.items():
        actions = sub.add_parser(group, help=HELP[group]).add_subparsers(dest="action", required=True)
        for action, op in ops.items():
            p = actions.add_parser(action)
            if op.target:
                p.add_argument("target", metavar=op.target)
            if op.org:
                p.add_argument("--org", required=True, help="organization id")
            for name in op.extra:
                p.add_argument(f"--{name}", required=True)
            if op.body is None:
                continue
            info = msgspec.inspect.type_info(op.body)
            assert isinstance(info, msgspec.inspect.StructType)
            for f in info.fields:
                kind = _kind(f.type)
                hint = {"list": "comma-separated", "json": "JSON object"}.get(kind, "")
                p.add_argument(f"--{f.name.replace('_', '-')}", dest=f"body_{f.name}", required=f.required,
                               help=hint or None)


def body_from_args(op: Op, args: argparse.Namespace) -> msgspec.Struct | None:
    """Build the operation's body from `--field` options; raises msgspec.ValidationError."""
    if op.body is None:
        return None
    info = msgspec.inspect.type_info(op.body)
    assert isinstance(info, msgspec.inspect.StructType)
    raw: dict[str, Any] = {}
    for f in info.fields:
        value = getattr(args, f"body_{f.name}", None)
        if value is None:
            continue
        kind = _kind(f.type)
        if value == "null":
            raw[f.name] = None
        elif kind == "list":
            raw[f.name] = [v.strip() for v in value.split(",") if v.strip()]
        elif kind == "json":
            try:
                raw[f.name] = msgspec.json.decode(value)
            except msgspec.DecodeError:
                raise msgspec.ValidationError(f"--{f.name.replace('_', '-')}: not valid JSON") from None
        else:
            raw[f.name] = value
    # strict=False: "8080" and "true" from the command line become int and bool.
    return msgspec.convert(raw, op.body, strict=False)
