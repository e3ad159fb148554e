"""Scheduled orders in the admin console; imported by ``orders/admin.py``."""

from __future__ import annotations

from django import forms
from django.contrib import admin, messages
from django.core.exceptions import ValidationError
from django.utils import timezone

from algoways.admin import TeamScopedAdmin, admin_team_ids

from . import schedules
from .schedule_models import ScheduledOrder, ScheduledOrderRun


class ScheduledOrderForm(forms.ModelForm):
    """Checks a schedule with the same rules as the API (``schedules.schedule_validate``)."""

    class Meta:
        model = ScheduledOrder
        fields = [
            "team",
            "name",
            "kind",
            "accounts",
            "whole_team",
            "specs",
            "run_at",
            "cron",
            "timezone",
            "enabled",
            "grace_seconds",
        ]

    @property
    def timing_changed(self) -> bool:
        return self.instance._state.adding or bool(set(self.changed_data) & schedules.TIMING_FIELDS)

    def _post_clean(self):
        super()._post_clean()
        if self._errors or not self.instance.team_id:
            return
        try:
            schedules.schedule_validate(
                self.instance,
                accounts=list(self.cleaned_data.get("accounts") or []),
                now=timezone.now(),
                timing_changed=self.timing_changed,
            )
        except ValidationError as exc:
            self._update_errors(exc)


class ScheduledOrderRunInline(admin.TabularInline):
    """A schedule's runs: written by the scheduler only, so read-only here."""

    model = ScheduledOrderRun
    extra = 0
    can_delete = False
    fields = ["scheduled_for", "fired_at", "outcome", "group", "details"]
    readonly_fields = fields
    ordering = ["-scheduled_for"]

    def has_add_permission(self, request, obj=None):
        return False

    def has_change_permission(self, request, obj=None):
        return False


@admin.register(ScheduledOrder)
class ScheduledOrderAdmin(TeamScopedAdmin):
    """Scheduled orders of the admin's teams, with their runs."""

    form = ScheduledOrderForm
    list_display = [
        "name",
        "team",
        "kind",
        "cron",
        "run_at",
        "timezone",
        "enabled",
        "next_run_at",
        "last_run_at",
        "last_result",
    ]
    list_filter = ["kind", "enabled"]
    search_fields = ["name"]
    readonly_fields = ["next_run_at", "last_run_at", "last_result", "created_by", "created_at"]
    filter_horizontal = ["accounts"]
    inlines = [ScheduledOrderRunInline]
    actions = ["enable_selected", "disable_selected"]

    def formfield_for_manytomany(self, db_field, request, **kwargs):
        field = super().formfield_for_manytomany(db_field, request, **kwargs)
        if db_field.name == "accounts" and not request.user.is_superuser:
            field.queryset = field.queryset.filter(team_id__in=admin_team_ids(request.user))
        return field

    def save_model(self, request, obj, form, change):
        if form.timing_changed:
            obj.next_run_at = schedules.schedule_next_run(obj, now=timezone.now())
        if not change:
            obj.created_by = request.user.membership_in(obj.team)
        super().save_model(request, obj, form, change)

    @admin.action(description="Enable selected schedules")
    def enable_selected(self, request, queryset):
        self._switch(request, queryset, enabled=True)

    @admin.action(description="Disable selected schedules")
    def disable_selected(self, request, queryset):
        self._switch(request, queryset, enabled=False)

    def _switch(self, request, queryset, *, enabled: bool):
        done, failed = 0, []
        for schedule in queryset:
            try:
                schedules.schedule_enable(schedule=schedule, enabled=enabled)
                done += 1
            except ValidationError as exc:
                failed.append(f"{schedule}: {'; '.join(exc.messages)}")
        if done:
            self.message_user(request, f"{'Enabled' if enabled else 'Disabled'} {done}.")
        if failed:
            self.message_user(request, "Not changed: " + " | ".join(failed), messages.WARNING)
