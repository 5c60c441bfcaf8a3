"""Which organization a logged-in page (dashboard, billing) acts on, and what the user may do there.

The current organization is stored in the session (the switcher), or named by a form field, and is
only ever used through the user's membership: a page can never act on an organization the user
does not belong to (naming one is a 404). Owners and admins manage keys, billing and settings;
members use the playground and read jobs and usage.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import wraps

from django.contrib.auth.decorators import login_required
from django.http import Http404
from django.shortcuts import render

from tenants.models import Membership, Organization

SESSION_ORGANIZATION = "dashboard_organization"
MANAGER_ROLES = (Membership.Role.OWNER, Membership.Role.ADMIN)


@dataclass(frozen=True)
class DashboardAccess:
    organization: Organization
    role: str
    memberships: list[Membership]

    @property
    def can_manage(self) -> bool:
        return self.role in MANAGER_ROLES


def dashboard_access(request, *, organization_id: str | None = None) -> DashboardAccess | None:
    """One query: the user's memberships with their organizations and plans. `organization_id`
    (a form field) picks one of them explicitly: 404 when it is not one of the user's."""
    memberships = list(
        Membership.objects.filter(user=request.user)
        .select_related("organization__plan")
        .order_by("organization__name", "organization_id")
    )
    if not memberships:
        return None
    if organization_id:
        current = next((m for m in memberships if m.organization.public_id == organization_id), None)
        if current is None:
            raise Http404("No such organization.")
        return DashboardAccess(organization=current.organization, role=current.role, memberships=memberships)
    wanted = request.session.get(SESSION_ORGANIZATION)
    current = next((m for m in memberships if m.organization.public_id == wanted), memberships[0])
    return DashboardAccess(organization=current.organization, role=current.role, memberships=memberships)


def dashboard_view(*, manage: bool = False):
    """Log-in required; resolves `request.access`. `manage=True`: owners and admins only (403 page)."""

    def decorator(view):
        @login_required
        @wraps(view)
        def wrapper(request, *args, **kwargs):
            access = request.access = dashboard_access(request)
            if access is None:
                return render(request, "dashboard/no_organization.html", status=403)
            if manage and not access.can_manage:
                return render(
                    request,
                    "403.html",
                    {"reason": "Only owners and admins of this organization can do this."},
                    status=403,
                )
            return view(request, *args, **kwargs)

        return wrapper

    return decorator
