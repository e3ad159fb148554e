"""Server-rendered broker pages: the OAuth callback the broker redirects the browser to."""

from django.core.exceptions import ValidationError
from django.shortcuts import render
from django.views.decorators.http import require_GET

from . import services
from .adapters.errors import BrokerError


@require_GET
def oauth_callback(request, broker: str):
    """Finish a broker login. The signed, single-use ``state`` names the account and team."""
    state = request.GET.get("state", "")
    context = {"broker": broker, "ok": False}
    try:
        session = services.oauth_login_complete(state=state, params=request.GET.dict())
    except ValidationError as exc:
        context["error"] = " ".join(m for msgs in exc.message_dict.values() for m in msgs)
        return render(request, "console/broker_callback.html", context, status=400)
    except BrokerError as exc:
        context["error"] = f"The broker refused the login: {exc.message}"
        return render(request, "console/broker_callback.html", context, status=400)
    context.update(ok=True, account=session.broker_account)
    return render(request, "console/broker_callback.html", context)
