"""Dashboard forms: input validation with messages a person can act on. Business rules stay in
services; these only shape and check what was typed."""

from __future__ import annotations

from typing import Any

from django import forms
from django.contrib.admin.forms import AdminAuthenticationForm
from django.contrib.auth import get_user_model, password_validation
from django.contrib.auth.forms import AuthenticationForm, PasswordResetForm
from django.core.exceptions import ValidationError

from billing.selectors import LATEST_USAGE_DATE
from generation.api.serializers import RESOLUTIONS
from tenants.limits import rate_limit_hit
from tenants.login_throttle import (
    login_throttle_fail,
    login_throttle_keys,
    login_throttle_succeed,
    login_throttle_wait,
)
from tenants.models import ApiKey, Membership, Organization, Tier

ASPECT_RATIOS = ["1:1", "3:4", "4:3", "9:16", "16:9"]


class LoginThrottleMixin:
    """Exponential back-off on failed log-ins (tenants.login_throttle), for any AuthenticationForm.
    A blocked attempt is refused before the password is checked."""

    throttle_scope = "login"
    request: Any
    data: Any
    cleaned_data: dict

    def clean(self):
        keys = login_throttle_keys(
            request=self.request, username=self.data.get("username") or "", scope=self.throttle_scope
        )
        wait = login_throttle_wait(keys=keys)
        if wait:
            raise ValidationError(f"Too many log-in attempts. Try again in {wait} seconds.", code="throttled")
        try:
            cleaned = super().clean()  # type: ignore[misc]
        except ValidationError:
            login_throttle_fail(keys=keys)
            raise
        login_throttle_succeed(keys=keys)
        return cleaned


class ThrottledAuthenticationForm(LoginThrottleMixin, AuthenticationForm):
    """The dashboard log-in: throttled, and an e-mail address logs in as the one account that has it."""

    def clean(self):
        typed = self.data.get("username") or ""
        if "@" in typed:
            users = get_user_model().objects.filter(email__iexact=typed)
            if not get_user_model().objects.filter(username=typed).exists() and users.count() == 1:
                self.cleaned_data["username"] = users.get().get_username()
        return super().clean()


class ThrottledAdminAuthenticationForm(LoginThrottleMixin, AdminAuthenticationForm):
    """The admin log-in, throttled like the dashboard's but counted separately."""

    throttle_scope = "admin-login"


class ThrottledPasswordResetForm(PasswordResetForm):
    """Reset e-mails are capped per address (so nobody can flood an inbox through us)."""

    RESETS_PER_HOUR = 5

    def clean_email(self) -> str:
        email = self.cleaned_data["email"].strip().lower()
        result = rate_limit_hit(key=f"pwreset:{email}", limit=self.RESETS_PER_HOUR, window_seconds=3600)
        if not result.allowed:
            raise ValidationError("Too many reset requests for this address. Try again in an hour.")
        return email


class SignupForm(forms.Form):
    organization_name = forms.CharField(label="Company or team name", max_length=120)
    username = forms.RegexField(
        regex=r"^[\w.@+-]{3,150}$",
        max_length=150,
        error_messages={"invalid": "3-150 letters, digits and @/./+/-/_ only."},
    )
    email = forms.EmailField(label="Work e-mail")
    password = forms.CharField(widget=forms.PasswordInput, strip=False)

    # Whether the name or address is taken is not checked here: the page must not tell (see the
    # signup view); only the mailbox owner is told, by e-mail.
    def clean_email(self) -> str:
        return self.cleaned_data["email"].lower()

    def clean(self):
        cleaned = super().clean() or {}
        password = cleaned.get("password")
        if password:
            user = get_user_model()(username=cleaned.get("username", ""), email=cleaned.get("email", ""))
            try:
                password_validation.validate_password(password, user)
            except ValidationError as exc:
                self.add_error("password", exc)
        return cleaned


class InvitationSignupForm(forms.Form):
    """Creating an account from an invitation: the e-mail is the invited one."""

    username = SignupForm.base_fields["username"]
    password = forms.CharField(widget=forms.PasswordInput, strip=False)

    def clean_username(self) -> str:
        """Someone holding a valid invitation may learn that a user name is taken."""
        username = self.cleaned_data["username"]
        if get_user_model().objects.filter(username__iexact=username).exists():
            raise ValidationError("This username is taken.")
        return username

    def clean(self):
        cleaned = super().clean() or {}
        password = cleaned.get("password")
        if password:
            try:
                password_validation.validate_password(
                    password, get_user_model()(username=cleaned.get("username", ""))
                )
            except ValidationError as exc:
                self.add_error("password", exc)
        return cleaned


class InvitationForm(forms.Form):
    email = forms.EmailField()
    role = forms.ChoiceField(choices=Membership.Role.choices, initial=Membership.Role.MEMBER)


class ApiKeyCreateForm(forms.Form):
    name = forms.CharField(max_length=80)
    mode = forms.ChoiceField(choices=ApiKey.Mode.choices, initial=ApiKey.Mode.TEST)
    scopes = forms.MultipleChoiceField(
        choices=ApiKey.Scope.choices,
        initial=[ApiKey.Scope.GENERATE, ApiKey.Scope.READ],
        widget=forms.CheckboxSelectMultiple,
        error_messages={"required": "Choose at least one scope."},
    )


class ApiKeyCapsForm(forms.Form):
    """A live key's monthly caps; empty means no cap."""

    monthly_image_cap = forms.IntegerField(min_value=0, required=False, label="Monthly image cap")
    monthly_spend_cap = forms.DecimalField(
        min_value=0, max_digits=12, decimal_places=2, required=False, label="Monthly spend cap"
    )


class PlaygroundForm(forms.Form):
    api_key = forms.ChoiceField(label="API key")
    prompt = forms.CharField(widget=forms.Textarea(attrs={"rows": 3}), max_length=4000)
    tier = forms.ChoiceField(choices=Tier.choices, initial=Tier.FAST)
    aspect_ratio = forms.ChoiceField(choices=[(r, r) for r in ASPECT_RATIOS], initial="1:1")
    count = forms.IntegerField(min_value=1, max_value=4, initial=1)
    resolution = forms.ChoiceField(choices=[(r, r) for r in RESOLUTIONS.values()], initial="1K")

    def __init__(self, *args, keys: list[ApiKey], **kwargs):
        super().__init__(*args, **kwargs)
        api_key = self.fields["api_key"]
        assert isinstance(api_key, forms.ChoiceField)  # noqa: S101 - declared as one on this form
        api_key.choices = [(key.public_id, f"{key.name} ({key.masked})") for key in keys]

    def clean_prompt(self) -> str:
        prompt = self.cleaned_data["prompt"].strip()
        if not prompt:
            raise ValidationError("Describe the image you want.")
        return prompt


class SettingsForm(forms.Form):
    fallback_policy = forms.ChoiceField(choices=Organization.Fallback.choices)
    image_url_ttl_seconds = forms.IntegerField(
        label="Image URL lifetime (seconds)", min_value=60, max_value=7 * 24 * 3600
    )
    auto_migrate_models = forms.BooleanField(
        required=False, label="Serve requests pinned to a retired model with its successor"
    )


class UsageRangeForm(forms.Form):
    start = forms.DateField(widget=forms.DateInput(attrs={"type": "date"}))
    end = forms.DateField(widget=forms.DateInput(attrs={"type": "date"}))

    MAX_DAYS = 366

    def clean(self):
        cleaned = super().clean() or {}
        start, end = cleaned.get("start"), cleaned.get("end")
        for name, value in (("start", start), ("end", end)):
            if value and value > LATEST_USAGE_DATE:
                self.add_error(name, f"Dates must be on or before {LATEST_USAGE_DATE}.")
                return cleaned
        if start and end:
            if end < start:
                self.add_error("end", "The end must be on or after the start.")
            elif (end - start).days + 1 > self.MAX_DAYS:
                self.add_error("end", f"The range may cover at most {self.MAX_DAYS} days.")
        return cleaned


class WebhookForm(forms.Form):
    url = forms.URLField(label="Webhook URL", max_length=2000, assume_scheme="https")
