"""`{% dashboard_access as access %}`: the navigation's organization and role on every page, also
those rendered outside `dashboard_view` (billing, error pages). Resolved once per request."""

from django import template

from tenants.access import dashboard_access

register = template.Library()


@register.simple_tag(takes_context=True, name="dashboard_access")
def dashboard_access_tag(context):
    request = context.get("request")
    if request is None or not getattr(request, "user", None) or not request.user.is_authenticated:
        return None
    if not hasattr(request, "access"):
        request.access = dashboard_access(request)
    return request.access
