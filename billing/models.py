"""The usage ledger: one row per delivered image. It is the truth that invoices, Stripe meter
events and dashboards derive from; rows are written once (by the generation engine, in the same
transaction that finishes the job) and never updated except for their reporting state."""

from django.db import models

from tenants.ids import new_public_id


def new_usage_record_id() -> str:
    return new_public_id("usg")


class UsageRecordQuerySet(models.QuerySet):
    def for_org(self, organization):
        return self.filter(organization=organization)


class UsageRecord(models.Model):
    public_id = models.CharField(max_length=40, unique=True, default=new_usage_record_id, editable=False)
    organization = models.ForeignKey(
        "tenants.Organization", on_delete=models.PROTECT, related_name="usage_records"
    )
    api_key = models.ForeignKey(
        "tenants.ApiKey", null=True, blank=True, on_delete=models.SET_NULL, related_name="usage_records"
    )
    # Public ids rather than foreign keys: the ledger outlives job retention and stays decoupled.
    job_public_id = models.CharField(max_length=40, db_index=True)
    # One image is billed at most once, whatever retries or duplicate workers do.
    image_public_id = models.CharField(max_length=40, unique=True)
    livemode = models.BooleanField()
    requested_tier = models.CharField(max_length=16)
    served_tier = models.CharField(max_length=16)
    # The tier whose price applies (the requested one under fallback policy "allow").
    billed_tier = models.CharField(max_length=16)
    model = models.CharField(max_length=100)
    route = models.CharField(max_length=120)
    currency = models.CharField(max_length=3, default="usd")
    unit_price = models.DecimalField(max_digits=10, decimal_places=4)
    amount = models.DecimalField(max_digits=12, decimal_places=4)
    upstream_cost = models.DecimalField(max_digits=12, decimal_places=6)
    created_at = models.DateTimeField(db_index=True)

    objects = UsageRecordQuerySet.as_manager()

    class Meta:
        ordering = ["-created_at"]
        indexes = [models.Index(fields=["organization", "created_at"], name="usage_org_created")]

    def __str__(self) -> str:
        return f"{self.public_id} {self.organization_id} {self.billed_tier} {self.amount}"
