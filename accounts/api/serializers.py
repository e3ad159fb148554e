from rest_framework import serializers

from accounts.models import Membership, Role, Team, TeamAPIKey, User
from algoways.api.serializers import StrictSerializerMixin


class TeamSerializer(serializers.ModelSerializer):
    class Meta:
        model = Team
        fields = ["slug", "name"]


class MyTeamSerializer(serializers.Serializer):
    slug = serializers.CharField(source="team.slug")
    name = serializers.CharField(source="team.name")
    role = serializers.CharField()


class MeSerializer(serializers.ModelSerializer):
    teams = MyTeamSerializer(source="memberships", many=True, read_only=True)

    class Meta:
        model = User
        fields = ["id", "username", "email", "first_name", "last_name", "teams"]


class MembershipSerializer(StrictSerializerMixin, serializers.ModelSerializer):
    email = serializers.EmailField(source="user.email", read_only=True)
    username = serializers.CharField(source="user.username", read_only=True)

    class Meta:
        model = Membership
        fields = ["id", "email", "username", "role", "created_at"]
        read_only_fields = ["id", "created_at"]


class MembershipCreateSerializer(StrictSerializerMixin, serializers.Serializer):
    email = serializers.EmailField()
    role = serializers.ChoiceField(choices=Role.choices)


class MembershipUpdateSerializer(StrictSerializerMixin, serializers.Serializer):
    role = serializers.ChoiceField(choices=Role.choices)


class ApiKeySerializer(serializers.ModelSerializer):
    role = serializers.CharField(read_only=True)
    member = serializers.EmailField(source="membership.user.email", read_only=True)

    class Meta:
        model = TeamAPIKey
        fields = [
            "prefix",
            "name",
            "member",
            "role",
            "read_only",
            "created",
            "last_used_at",
            "expiry_date",
            "revoked",
        ]
        read_only_fields = fields


class ApiKeyCreateSerializer(StrictSerializerMixin, serializers.Serializer):
    name = serializers.CharField(max_length=50)
    read_only = serializers.BooleanField(default=False)
    expiry_date = serializers.DateTimeField(required=False, allow_null=True)


class ApiKeyCreatedSerializer(ApiKeySerializer):
    key = serializers.CharField(read_only=True, help_text="Shown once: store it now.")

    class Meta(ApiKeySerializer.Meta):
        fields = [*ApiKeySerializer.Meta.fields, "key"]
        read_only_fields = fields
