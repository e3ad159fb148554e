"""Console forms for broker accounts; secret fields are password inputs never rendered back."""

from django import forms

from .adapters import registry


class BrokerChoiceForm(forms.Form):
    broker = forms.ChoiceField(choices=())

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.fields["broker"].choices = [(a.code, a.name) for a in registry.all_adapters()]


class BrokerAccountForm(forms.Form):
    """Label, base URL and the broker's own credential fields, built from its adapter."""

    label = forms.CharField(max_length=100)

    def __init__(self, *args, adapter_class, editing: bool = False, **kwargs):
        super().__init__(*args, **kwargs)
        self.adapter_class = adapter_class
        self.fields["base_url"] = forms.URLField(
            required=adapter_class.base_url_required,
            label="Base URL",
            help_text="Your broker's platform URL."
            if adapter_class.base_url_required
            else f"Leave empty for {adapter_class.production_base_url}",
        )
        for field in adapter_class.credential_fields:
            widget = (
                forms.PasswordInput(render_value=False, attrs={"autocomplete": "new-password"})
                if field.secret
                else forms.TextInput
            )
            self.fields[f"cred_{field.name}"] = forms.CharField(
                label=field.label,
                required=field.required and not (editing and field.secret),
                widget=widget,
                help_text=field.help_text
                or (
                    "Stored encrypted; leave empty to keep it." if editing and field.secret else ""
                ),
            )

    def credentials(self) -> dict[str, str]:
        return {
            name[len("cred_") :]: value
            for name, value in self.cleaned_data.items()
            if name.startswith("cred_") and value
        }
