"""Forms of the billing pages."""

from __future__ import annotations

from django import forms

from tenants import services as tenant_services
from tenants.errors import InvalidRequest


class SpendControlsForm(forms.Form):
    """The organization's monthly spend cap and the e-mail alert thresholds (percent of the cap)."""

    monthly_spend_cap = forms.DecimalField(
        min_value=0, max_digits=12, decimal_places=2, required=False, label="Monthly spend cap"
    )
    spend_alert_thresholds = forms.CharField(
        required=False,
        max_length=40,
        label="Alert at (% of the cap)",
        help_text="Comma-separated, e.g. 80, 100. Owners get one e-mail per threshold per month.",
    )

    def clean_spend_alert_thresholds(self) -> list[int]:
        raw = [
            part.strip() for part in self.cleaned_data["spend_alert_thresholds"].split(",") if part.strip()
        ]
        try:
            return tenant_services.spend_alert_thresholds_clean(raw)
        except InvalidRequest as exc:
            raise forms.ValidationError(exc.message) from None
