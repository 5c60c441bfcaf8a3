from django.contrib.auth.decorators import login_required
from django.shortcuts import render

from tenants.selectors import organization_overview, organizations_for_user


@login_required
def home(request):
    organizations = organizations_for_user(user=request.user)
    overview = organization_overview(organization=organizations[0]) if organizations else None
    return render(request, "dashboard/home.html", {"overview": overview, "organizations": organizations})
