"""Dashboard forms: input validation with messages a person can act on. Business rules stay in
services; these only shape and check what was typed."""

from __future__ import annotations

from django import forms
from django.contrib.auth import get_user_model, password_validation
from django.contrib.auth.forms import AuthenticationForm, PasswordResetForm
from django.core.exceptions import ValidationError

from generation.api.serializers import RESOLUTIONS
from tenants.limits import rate_limit_hit
from tenants.models import ApiKey, Membership, Organization, Tier

LOGIN_WINDOW_SECONDS = 300
LOGIN_ATTEMPTS_PER_USERNAME = 10
LOGIN_ATTEMPTS_PER_ADDRESS = 30
ASPECT_RATIOS = ["1:1", "3:4", "4:3", "9:16", "16:9"]


class ThrottledAuthenticationForm(AuthenticationForm):
    """Django's login form behind two fixed-window limits shared by every process (Redis, else the
    database, via tenants.limits): attempts per username, and per client address. Every attempt
    counts, so guessing a password is capped at 10 tries per 5 minutes per account."""

    def clean(self):
        username = (self.data.get("username") or "").strip().lower()
        address = self.request.META.get("REMOTE_ADDR", "") if self.request else ""
        for key, limit in (
            (f"login:user:{username}", LOGIN_ATTEMPTS_PER_USERNAME),
            (f"login:ip:{address}", LOGIN_ATTEMPTS_PER_ADDRESS),
        ):
            result = rate_limit_hit(key=key, limit=limit, window_seconds=LOGIN_WINDOW_SECONDS)
            if not result.allowed:
                raise ValidationError(
                    f"Too many log-in attempts. Try again in {result.retry_after} seconds.", code="throttled"
                )
        typed = self.cleaned_data.get("username") or ""
        if "@" in typed:  # an e-mail address logs in as the one account that has it
            users = get_user_model().objects.filter(email__iexact=typed)
            if not get_user_model().objects.filter(username=typed).exists() and users.count() == 1:
                self.cleaned_data["username"] = users.get().get_username()
        return super().clean()


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

    def clean_username(self) -> str:
        username = self.cleaned_data["username"]
        if get_user_model().objects.filter(username__iexact=username).exists():
            raise ValidationError("This username is taken.")
        return username

    def clean_email(self) -> str:
        email = self.cleaned_data["email"].lower()
        if get_user_model().objects.filter(email__iexact=email).exists():
            raise ValidationError("An account with this e-mail exists. Log in or reset your password.")
        return email

    def clean(self):
        cleaned = super().clean()
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

    clean_username = SignupForm.clean_username

    def clean(self):
        cleaned = super().clean()
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
        self.fields["api_key"].choices = [(key.public_id, f"{key.name} ({key.masked})") for key in keys]

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
        cleaned = super().clean()
        start, end = cleaned.get("start"), cleaned.get("end")
        if start and end:
            if end < start:
                self.add_error("end", "The end must be on or after the start.")
            elif (end - start).days + 1 > self.MAX_DAYS:
                self.add_error("end", f"The range may cover at most {self.MAX_DAYS} days.")
        return cleaned


class WebhookForm(forms.Form):
    url = forms.URLField(label="Webhook URL", max_length=2000, assume_scheme="https")
