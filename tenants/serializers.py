from rest_framework import serializers


class PlanOutputSerializer(serializers.Serializer):
    id = serializers.CharField(source="code")
    name = serializers.CharField()
    currency = serializers.CharField()
    base_price_monthly = serializers.DecimalField(max_digits=10, decimal_places=2)
    included_images_per_month = serializers.IntegerField()
    prices = serializers.SerializerMethodField()
    requests_per_minute = serializers.IntegerField()
    max_concurrent_jobs = serializers.IntegerField()
    allowed_tiers = serializers.ListField(child=serializers.CharField())

    def get_prices(self, plan) -> dict[str, str]:
        return {
            "fast": str(plan.price_fast),
            "standard": str(plan.price_standard),
            "ultra": str(plan.price_ultra),
        }


class LimitsOutputSerializer(serializers.Serializer):
    monthly_images = serializers.IntegerField()
    requests_per_minute = serializers.IntegerField()
    max_concurrent_jobs = serializers.IntegerField()
    allowed_tiers = serializers.ListField(child=serializers.CharField())


class OrganizationUsageOutputSerializer(serializers.Serializer):
    period_start = serializers.DateField()
    period_end = serializers.DateField()
    images_reserved = serializers.IntegerField()
    images_remaining = serializers.IntegerField()
    jobs_in_flight = serializers.IntegerField()


class SpendOutputSerializer(serializers.Serializer):
    """This month's live spend (plan currency, decimal strings); `reserved` includes the worst case
    of jobs in flight, which is what the caps are checked against."""

    currency = serializers.CharField()
    period_start = serializers.DateField()
    month_to_date = serializers.DecimalField(source="spend_used", max_digits=14, decimal_places=4)
    reserved = serializers.DecimalField(source="spend_reserved", max_digits=14, decimal_places=4)
    monthly_cap = serializers.DecimalField(
        source="spend_cap", max_digits=12, decimal_places=2, allow_null=True
    )
    remaining = serializers.DecimalField(
        source="spend_remaining", max_digits=14, decimal_places=4, allow_null=True
    )
    alert_thresholds = serializers.ListField(child=serializers.IntegerField())


class ApiKeySpendOutputSerializer(serializers.Serializer):
    """The calling key's caps and what it used this month (live images)."""

    monthly_image_cap = serializers.IntegerField(source="key_image_cap", allow_null=True)
    images_this_month = serializers.IntegerField(source="key_images_reserved")
    images_remaining = serializers.IntegerField(source="key_images_remaining", allow_null=True)
    monthly_spend_cap = serializers.DecimalField(
        source="key_spend_cap", max_digits=12, decimal_places=2, allow_null=True
    )
    spend_this_month = serializers.DecimalField(source="key_spend_used", max_digits=14, decimal_places=4)
    spend_reserved = serializers.DecimalField(source="key_spend_reserved", max_digits=14, decimal_places=4)
    spend_remaining = serializers.DecimalField(
        source="key_spend_remaining", max_digits=14, decimal_places=4, allow_null=True
    )


class OrganizationOutputSerializer(serializers.Serializer):
    id = serializers.CharField(source="public_id")
    object = serializers.SerializerMethodField()
    name = serializers.CharField()
    slug = serializers.CharField()
    status = serializers.CharField()
    fallback_policy = serializers.CharField()
    image_url_ttl_seconds = serializers.IntegerField()
    created_at = serializers.DateTimeField()
    plan = PlanOutputSerializer()
    limits = LimitsOutputSerializer(source="effective_limits")
    usage = OrganizationUsageOutputSerializer(source="usage_this_month")
    spend = SpendOutputSerializer()
    api_key = serializers.SerializerMethodField()
    api_key_spend = ApiKeySpendOutputSerializer(source="spend")

    def get_object(self, _) -> str:
        return "organization"

    def get_api_key(self, _) -> dict:
        api_key = self.context["api_key"]
        return {"id": api_key.public_id, "name": api_key.name, "mode": api_key.mode, "scopes": api_key.scopes}
