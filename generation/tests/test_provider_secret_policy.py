"""Provider accounts cannot be pointed at arbitrary secrets or hosts (issue 13): an allow-list of
variable names, one secrets directory, Google's hosts only, superuser-only fields, audit trail."""

import json

import pytest
from django.contrib.admin.models import LogEntry
from django.contrib.auth import get_user_model
from django.test import Client

from generation.engine.credentials import account_credentials
from generation.models import ProviderAccount, base_url_allowed, credentials_ref_problem

pytestmark = pytest.mark.django_db


@pytest.fixture
def gemini(pro_plan) -> ProviderAccount:
    return ProviderAccount.objects.get(name="gemini-api")


@pytest.mark.parametrize(
    "ref",
    ["env:STRIPE_SECRET_KEY", "env:SECRET_KEY", "envfile:HOME", "file:/proc/self/environ", "ftp:x", "env:"],
)
def test_references_outside_the_allow_list_are_never_read(gemini, monkeypatch, ref):
    monkeypatch.setenv("STRIPE_SECRET_KEY", "sk_live_must_not_leak")
    monkeypatch.setenv("SECRET_KEY", "django-secret")
    gemini.credentials_ref = ref
    assert credentials_ref_problem(ref) is not None
    assert account_credentials(gemini) is None


def test_allowed_variables_and_files_inside_the_secrets_directory_are_read(
    gemini, monkeypatch, settings, tmp_path
):
    monkeypatch.setenv("IMAGEGATE_PROVIDER_GEMINI_KEY", "AIza-allowed")
    gemini.credentials_ref = "env:IMAGEGATE_PROVIDER_GEMINI_KEY"
    assert account_credentials(gemini).api_key == "AIza-allowed"

    settings.PROVIDER_SECRETS_DIR = str(tmp_path / "secrets")
    (tmp_path / "secrets").mkdir()
    (tmp_path / "secrets" / "gemini").write_text("AIza-from-file\n")
    (tmp_path / "outside").write_text("AIza-outside")
    gemini.credentials_ref = f"file:{tmp_path}/secrets/gemini"
    assert account_credentials(gemini).api_key == "AIza-from-file"
    for ref in (
        f"file:{tmp_path}/secrets/../outside",
        f"file:{tmp_path}/outside",
        f"file:{tmp_path}/secrets",
    ):
        gemini.credentials_ref = ref
        assert account_credentials(gemini) is None, ref
    (tmp_path / "secrets" / "link").symlink_to(tmp_path / "outside")
    gemini.credentials_ref = f"file:{tmp_path}/secrets/link"
    assert account_credentials(gemini) is None


@pytest.mark.parametrize(
    ("url", "allowed"),
    [
        ("https://generativelanguage.googleapis.com", True),
        ("https://us-central1-aiplatform.googleapis.com", True),
        ("http://generativelanguage.googleapis.com", False),
        ("https://attacker.example", False),
        ("https://generativelanguage.googleapis.com.attacker.example", False),
        ("https://user:pw@generativelanguage.googleapis.com", False),
        ("https://generativelanguage.googleapis.com:bad", False),
        ("http://127.0.0.1:9999", True),  # allowed by the test settings (tests/personas.py)
        ("https://10.0.0.1", False),
    ],
)
def test_base_urls_are_limited_to_allowed_hosts(url, allowed):
    assert base_url_allowed(url) is allowed


def test_a_secret_is_never_sent_to_a_host_that_is_not_allowed(gemini, monkeypatch, settings):
    monkeypatch.setenv("GEMINI_API_KEY", "AIza-real")
    gemini.base_url = "https://attacker.example"
    assert account_credentials(gemini) is None  # the route counts as unconfigured
    settings.PROVIDER_BASE_URL_HOSTS = ["attacker.example"]  # an operator may allow a host explicitly
    assert account_credentials(gemini).api_key == "AIza-real"


def change(client, account, **fields):
    data = {
        "name": account.name,
        "kind": account.kind,
        "base_url": account.base_url,
        "region": account.region,
        "project": account.project,
        "credentials_ref": account.credentials_ref,
        "max_concurrency": account.max_concurrency,
        "timeout_seconds": account.timeout_seconds,
        "options": json.dumps(account.options),
        "enabled": "on",
        **fields,
    }
    return client.post(f"/admin/generation/provideraccount/{account.pk}/change/", data)


def admin_client(*, superuser: bool) -> Client:
    User = get_user_model()
    if superuser:
        user = User.objects.create_superuser("root", "root@example.com", "pw-for-tests")
    else:
        from django.contrib.auth.models import Permission

        user = User.objects.create_user("staff", "staff@example.com", "pw-for-tests", is_staff=True)
        user.user_permissions.add(*Permission.objects.filter(codename__endswith="provideraccount"))
    client = Client()
    client.force_login(user)
    return client


def test_the_admin_refuses_disallowed_values(gemini):
    client = admin_client(superuser=True)
    response = change(client, gemini, credentials_ref="env:STRIPE_SECRET_KEY")
    assert response.status_code == 200 and b"PROVIDER_SECRET_ENV_NAMES" in response.content
    response = change(client, gemini, base_url="https://attacker.example")
    assert response.status_code == 200 and b"PROVIDER_BASE_URL_HOSTS" in response.content
    gemini.refresh_from_db()
    assert gemini.credentials_ref == "env:GEMINI_API_KEY" and gemini.base_url == ""


def test_only_superusers_change_where_secrets_come_from_and_go(gemini):
    staff = admin_client(superuser=False)
    response = change(staff, gemini, base_url="https://generativelanguage.googleapis.com", max_concurrency=5)
    assert response.status_code == 302
    gemini.refresh_from_db()
    assert gemini.max_concurrency == 5 and gemini.base_url == ""  # tuning yes, redirection no
    assert staff.get("/admin/generation/provideraccount/add/").status_code == 403


def test_changes_are_kept_with_old_and_new_values(gemini):
    client = admin_client(superuser=True)
    new = "https://us-central1-aiplatform.googleapis.com"
    assert (
        change(client, gemini, base_url=new, credentials_ref="env:IMAGEGATE_PROVIDER_KEY").status_code == 302
    )
    entry = LogEntry.objects.get(object_id=str(gemini.pk))
    assert entry.user.username == "root"
    record = json.loads(entry.change_message)
    security = next(item["security"] for item in record if "security" in item)
    assert security["base_url"] == {"old": "", "new": new}
    assert security["credentials_ref"] == {"old": "env:GEMINI_API_KEY", "new": "env:IMAGEGATE_PROVIDER_KEY"}
