"""Every control-plane operation's id, summary, description and extra error codes, for the OpenAPI
document (`openapi.py`). One row per route: a route missing here fails the document's test, so a
new handler cannot ship undocumented. Errors every operation of a door can answer are added by
`openapi.py`; `errors` names the codes specific to one operation (their statuses come from the one
error table, core/errors.py).
"""

from __future__ import annotations

from typing import NamedTuple

__all__ = ["OPERATIONS", "Op"]


class Op(NamedTuple):
    id: str
    summary: str
    description: str = ""
    errors: tuple[str, ...] = ()


_IDEM = ("idempotency_key_in_use", "idempotency_key_reused")

OPERATIONS: dict[str, Op] = {
    # /v1 through the edge, with an API key.
    "GET /v1/models": Op("listModels", "List models",
                         "The models this key may use (OpenAI's list shape)."),
    "GET /v1/models/{model_id}": Op("retrieveModel", "Retrieve a model", "", ("model_not_found",)),
    "GET /v1/usage": Op("listUsage", "Usage of the organization",
                        "Usage records or rolled-up buckets of the calling key's organization (limited to the "
                        "key's projects), filtered and grouped by the query parameters.",
                        ("missing_required_parameter", "unsupported_parameter")),
    "GET /v1/responses/{response_id}": Op(
        "retrieveResponse", "Retrieve a stored response",
        "The stored Response object; with `stream=true` a background response is streamed as "
        "server-sent events (resumable with `starting_after`)."),
    "DELETE /v1/responses/{response_id}": Op("deleteResponse", "Delete a stored response"),
    "POST /v1/responses/{response_id}/cancel": Op("cancelResponse", "Cancel a background response",
                                                  "Returns the Response object as it stands after the cancel."),
    "GET /v1/responses/{response_id}/input_items": Op("listResponseInputItems", "List a response's input items"),
    "GET /v1/webhooks/endpoints": Op("listWebhookEndpoints", "List webhook endpoints"),
    "POST /v1/webhooks/endpoints": Op("createWebhookEndpoint", "Create a webhook endpoint",
                                      "The answer carries `secret`, shown only here and on rotation."),
    "GET /v1/webhooks/endpoints/{endpoint_id}": Op("retrieveWebhookEndpoint", "Retrieve a webhook endpoint"),
    "POST /v1/webhooks/endpoints/{endpoint_id}": Op("updateWebhookEndpoint", "Update a webhook endpoint",
                                                    "`enabled: true` re-enables a disabled endpoint."),
    "PATCH /v1/webhooks/endpoints/{endpoint_id}": Op("patchWebhookEndpoint", "Update a webhook endpoint (PATCH)",
                                                     "Same as the POST form."),
    "DELETE /v1/webhooks/endpoints/{endpoint_id}": Op("deleteWebhookEndpoint", "Delete a webhook endpoint",
                                                      "Pending deliveries stop; the delivery log is kept."),
    "POST /v1/webhooks/endpoints/{endpoint_id}/rotate_secret": Op(
        "rotateWebhookSecret", "Rotate the signing secret",
        "A new secret signs from now on; each replaced one keeps signing for 24 hours from its own "
        "rotation (at most 10 at once).", ("conflict",)),
    "POST /v1/webhooks/endpoints/{endpoint_id}/test": Op(
        "sendWebhookTest", "Send a test event", "A `webhook.test` event through the real delivery path.",
        ("conflict",)),
    "GET /v1/webhooks/endpoints/{endpoint_id}/deliveries": Op(
        "listWebhookDeliveries", "List deliveries and their attempts",
        "Newest first; every attempt is logged when it starts."),
    "POST /v1/webhooks/endpoints/{endpoint_id}/replay": Op(
        "replayWebhookEvents", "Replay events",
        "One event (`event_id`) or a time range (`since`, `until`), 1000 per call; missed "
        "`request.completed` events are rebuilt from usage records (`rebuilt`).",
        ("conflict", "missing_required_parameter")),
    # /v1/organization: the customer REST API, with an admin key or a session (OpenAI's organization
    # admin API shapes). A role that may not do something answers 403 `permission_denied`.
    "GET /v1/organization/projects": Op("listOrgProjects", "List projects",
                                        "The caller's projects (a narrowed member sees only theirs)."),
    "POST /v1/organization/projects": Op("createOrgProject", "Create a project", "", ("conflict",)),
    "GET /v1/organization/projects/{project_id}": Op("retrieveOrgProject", "Retrieve a project"),
    "POST /v1/organization/projects/{project_id}": Op("modifyOrgProject", "Modify a project", "", ("conflict",)),
    "POST /v1/organization/projects/{project_id}/archive": Op("archiveOrgProject", "Archive a project"),
    "POST /v1/organization/projects/{project_id}/budget": Op(
        "setOrgProjectBudget", "Set a project's monthly budget", "Allowed to the billing role as well."),
    "GET /v1/organization/projects/{project_id}/api_keys": Op("listProjectApiKeys", "List a project's API keys",
                                                             "Secrets are never listed."),
    "POST /v1/organization/projects/{project_id}/api_keys": Op(
        "createProjectApiKey", "Create an API key",
        "Every scope of the platform: projects, models, endpoints, IP ranges, budget, rate limits, expiry, "
        "signed requests. The answer carries the key's secret, shown only here."),
    "GET /v1/organization/projects/{project_id}/api_keys/{key_id}": Op("retrieveProjectApiKey",
                                                                      "Retrieve an API key"),
    "POST /v1/organization/projects/{project_id}/api_keys/{key_id}": Op(
        "modifyProjectApiKey", "Update an API key's scopes and limits", "", ("conflict",)),
    "DELETE /v1/organization/projects/{project_id}/api_keys/{key_id}": Op("deleteProjectApiKey",
                                                                         "Revoke an API key"),
    "GET /v1/organization/users": Op("listOrgUsers", "List members"),
    "GET /v1/organization/users/{user_id}": Op("retrieveOrgUser", "Retrieve a member"),
    "POST /v1/organization/users/{user_id}": Op("modifyOrgUser", "Change a member's role or projects",
                                                "The last owner cannot be demoted.", ("conflict",)),
    "DELETE /v1/organization/users/{user_id}": Op(
        "deleteOrgUser", "Remove a member",
        "Their sessions end; the organization's keys they created stay and are listed. The last owner "
        "cannot leave.", ("conflict",)),
    "GET /v1/organization/invites": Op("listInvites", "List invitations"),
    "POST /v1/organization/invites": Op("inviteUser", "Invite someone by email",
                                        "The invitation link goes by email only.", ("conflict",)),
    "GET /v1/organization/invites/{invite_id}": Op("retrieveInvite", "Retrieve an invitation"),
    "DELETE /v1/organization/invites/{invite_id}": Op("deleteInvite", "Revoke an invitation", "", ("conflict",)),
    "POST /v1/organization/invites/accept": Op("acceptInvite", "Accept an invitation",
                                               "Signed in as the invitee, with the token from the email.",
                                               ("conflict",)),
    "GET /v1/organization/admin_api_keys": Op("listAdminApiKeys", "List admin keys"),
    "POST /v1/organization/admin_api_keys": Op("createAdminApiKey", "Create an admin key",
                                               "The answer carries the key (`value`), shown only here."),
    "GET /v1/organization/admin_api_keys/{key_id}": Op("retrieveAdminApiKey", "Retrieve an admin key"),
    "DELETE /v1/organization/admin_api_keys/{key_id}": Op("deleteAdminApiKey", "Revoke an admin key"),
    "GET /v1/organization/audit_logs": Op("listAuditLogs", "List the audit log",
                                          "Owners and admins: who changed what, when, from which address."),
    "GET /v1/organization/settings": Op("retrieveOrgSettings", "Retrieve the organization's settings"),
    "POST /v1/organization/settings": Op("modifyOrgSettings", "Change the organization's settings"),
    # /auth: customers sign up and in (no API key; a session cookie, writes with X-CSRF-Token).
    "POST /auth/signup": Op("signUp", "Sign up",
                            "Creates the user, an organization with a default project (no key) and mails a "
                            "verification link. The answer is the same whether or not the email was taken.",
                            ("weak_password", "rate_limit_exceeded", "not_found")),
    "POST /auth/verify": Op("verifyEmail", "Verify an email", "Spends the mailed token (single use, 24 hours).",
                            ("invalid_token",)),
    "POST /auth/signin": Op("signIn", "Sign in",
                            "Sets the `__Host-nx_session` cookie (a new session token every time) and answers "
                            "the session with its CSRF token. Failed attempts lock the account and the client "
                            "address out with exponential back-off.",
                            ("invalid_credentials", "email_not_verified", "rate_limit_exceeded", "not_found")),
    "GET /auth/session": Op("retrieveSession", "Who is signed in", "", ("not_signed_in",)),
    "POST /auth/signout": Op("signOut", "Sign out", "", ("not_signed_in", "csrf_failed")),
    "POST /auth/signout_all": Op("signOutEverywhere", "Sign out everywhere", "", ("not_signed_in", "csrf_failed")),
    "POST /auth/password": Op("changePassword", "Change the password", "",
                              ("not_signed_in", "csrf_failed", "invalid_credentials", "weak_password",
                               "rate_limit_exceeded", "not_found")),
    "POST /auth/password_reset": Op("requestPasswordReset", "Ask for a password reset mail",
                                    "The answer is the same whether or not an account has the email.", ("not_found",)),
    "POST /auth/password_reset/complete": Op("resetPassword", "Reset the password with the mailed token",
                                             "Every session of the user ends.",
                                             ("invalid_token", "weak_password", "not_found")),
    "POST /auth/webhooks/clerk": Op("receiveClerkWebhook", "Receive a Clerk webhook",
                                    "Svix-signed (`svix-id`, `svix-timestamp`, `svix-signature`); a message id "
                                    "already applied answers `duplicate` and changes nothing.",
                                    ("webhook_signature_invalid", "not_found")),
    # /api: the operator's management API, with the admin token.
    "GET /api/orgs": Op("listOrganizations", "List organizations"),
    "POST /api/orgs": Op("createOrganization", "Create an organization"),
    "GET /api/orgs/{org_id}": Op("retrieveOrganization", "Retrieve an organization"),
    "PATCH /api/orgs/{org_id}": Op("updateOrganization", "Update an organization"),
    "GET /api/orgs/{org_id}/projects": Op("listProjects", "List projects"),
    "POST /api/orgs/{org_id}/projects": Op("createProject", "Create a project", "", ("conflict",)),
    "GET /api/orgs/{org_id}/projects/{project_id}": Op("retrieveProject", "Retrieve a project"),
    "PATCH /api/orgs/{org_id}/projects/{project_id}": Op("updateProject", "Update a project"),
    "POST /api/orgs/{org_id}/admin_api_keys": Op(
        "createAdminKeyForOrganization", "Create an organization's admin key",
        "For the customer REST API (`/v1/organization/...`); the answer carries the key, shown only here."),
    "GET /api/orgs/{org_id}/members": Op("listMembers", "List members"),
    "POST /api/orgs/{org_id}/members": Op("addMember", "Add a member", "", ("conflict",)),
    "GET /api/orgs/{org_id}/members/{user_id}": Op("retrieveMember", "Retrieve a member"),
    "PATCH /api/orgs/{org_id}/members/{user_id}": Op("updateMember", "Change a member's role"),
    "DELETE /api/orgs/{org_id}/members/{user_id}": Op("removeMember", "Remove a member", "", ("conflict",)),
    "GET /api/users": Op("listUsers", "List users"),
    "POST /api/users": Op("createUser", "Create a user", "", ("conflict",)),
    "GET /api/users/{user_id}": Op("retrieveUser", "Retrieve a user"),
    "GET /api/orgs/{org_id}/keys": Op("listKeys", "List API keys", "Secrets are never listed."),
    "POST /api/orgs/{org_id}/keys": Op("createKey", "Create an API key",
                                       "The answer carries the key's secret, shown only here."),
    "GET /api/orgs/{org_id}/keys/{key_id}": Op("retrieveKey", "Retrieve an API key"),
    "PATCH /api/orgs/{org_id}/keys/{key_id}": Op("updateKey", "Update an API key's scopes and limits"),
    "DELETE /api/orgs/{org_id}/keys/{key_id}": Op("deleteKey", "Delete an API key"),
    "POST /api/orgs/{org_id}/keys/{key_id}/revoke": Op("revokeKey", "Revoke an API key"),
    "POST /api/orgs/{org_id}/keys/{key_id}/signing-secret": Op(
        "rotateKeySigningSecret", "Require signed requests (new signing secret)",
        "Replay protection: from now on every request with this key must be signed."),
    "DELETE /api/orgs/{org_id}/keys/{key_id}/signing-secret": Op("disableKeySigning", "Stop requiring signed requests"),
    "POST /api/orgs/{org_id}/ledger/grants": Op("grantCredit", "Grant credit",
                                                "Needs an `Idempotency-Key` header.", _IDEM),
    "POST /api/orgs/{org_id}/ledger/adjustments": Op("adjustBalance", "Adjust a balance",
                                                     "Needs an `Idempotency-Key` header.", _IDEM),
    "POST /api/orgs/{org_id}/ledger/transactions/{txn_id}/reverse": Op(
        "reverseTransaction", "Reverse a transaction", "Needs an `Idempotency-Key` header.", (*_IDEM, "conflict")),
    "GET /api/orgs/{org_id}/ledger/transactions/{txn_id}": Op("retrieveTransaction", "Retrieve a transaction"),
    "GET /api/orgs/{org_id}/ledger/balance": Op("retrieveBalance", "Balances of an organization"),
    "PUT /api/orgs/{org_id}/ledger/alerts": Op("setLowBalanceAlert", "Set the low-balance alert"),
    "GET /api/orgs/{org_id}/ledger/statement": Op("listStatement", "Account statement",
                                                  "`since`/`until` are Unix milliseconds."),
    "GET /api/health": Op("platformHealth", "Platform health",
                          "Which processes answer their /metrics, and the numbers the alert rules watch "
                          "(docs/observability.md); `status` is `degraded` with its reasons."),
    "GET /api/ledger/reconcile": Op("reconcileLedger", "Reconcile the ledger",
                                    "Recomputes every balance from the journal; `ok` is false on any drift."),
    "GET /api/orgs/{org_id}/exports/usage": Op(
        "exportUsage", "Export usage records",
        "A stream of CSV or JSON Lines (a JSON Lines export ends with its totals line)."),
    "GET /api/orgs/{org_id}/exports/usage/totals": Op("exportUsageTotals", "Totals of a usage export"),
    "GET /api/orgs/{org_id}/exports/ledger": Op("exportLedger", "Export ledger entries",
                                                "A stream of CSV or JSON Lines."),
    "GET /api/orgs/{org_id}/exports/ledger/totals": Op("exportLedgerTotals", "Totals of a ledger export"),
    "GET /api/backends": Op("listBackends", "List backends"),
    "POST /api/backends": Op("createBackend", "Create a backend", "", ("conflict",)),
    "GET /api/backends/{backend_id}": Op("retrieveBackend", "Retrieve a backend"),
    "PATCH /api/backends/{backend_id}": Op("updateBackend", "Update a backend"),
    "POST /api/backends/{backend_id}/disable": Op("disableBackend", "Disable a backend"),
    "GET /api/models": Op("listModelsAdmin", "List models (operator view)"),
    "POST /api/models": Op("createModel", "Create a model", "", ("conflict",)),
    "GET /api/models/{model_id}": Op("retrieveModelAdmin", "Retrieve a model (operator view)"),
    "PATCH /api/models/{model_id}": Op("updateModel", "Update a model"),
    "GET /api/prices": Op("listPrices", "List a model's price cards"),
    "POST /api/prices": Op("addPrice", "Add a price card", "Price cards are append-only.", ("conflict",)),
    "GET /api/routes": Op("listRoutes", "List model aliases and route groups"),
    "GET /api/routes/health": Op("getRouteHealth", "Route targets' health (ejections, failures)"),
    "PUT /api/routes/{alias}": Op("setRoute", "Point an alias at a model, or save a route group"),
    "DELETE /api/routes/{alias}": Op("deleteRoute", "Delete an alias"),
    "GET /healthz": Op("health", "Liveness"),
}
