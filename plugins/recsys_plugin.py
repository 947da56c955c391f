"""Airflow plugin: the "Recommender" page in the Airflow UI.

Mounts the FastAPI app of :mod:`recsys.ui` in the API server under
``/recsys`` and adds a top-level "Recommender" entry to the UI navigation that
shows it. The page sits behind Airflow's own login: every request must carry
the session cookie (or a bearer token) that Airflow's auth manager accepts,
and the user must be allowed to see the website. A browser that is not
logged in is sent to Airflow's login page and comes back afterwards.

Only glue lives here; the page itself is built in :mod:`recsys.ui` (one
registered model at a time, ``?model=NAME`` picks another), which also sets
the page's Content-Security-Policy: no script, nothing from another origin,
framed only by the same origin, which is how the external view below shows
it. Airflow's API modules are imported when a request arrives, not when the
plugin loads, because every task process loads plugins too.
"""

from __future__ import annotations

from airflow.plugins_manager import AirflowPlugin
from fastapi import Request

from recsys.ui import create_app

URL_PREFIX = "/recsys"


async def require_airflow_login(request: Request) -> None:
    """Let the request through only for a logged-in user allowed to see the UI.

    Raises:
        fastapi.HTTPException: 401 without a valid session or token, 403 for a
            user the auth manager does not allow.
    """
    from airflow.api_fastapi.app import get_auth_manager
    from airflow.api_fastapi.auth.managers.models.resource_details import AccessView
    from airflow.api_fastapi.core_api.security import bearer_scheme, get_user
    from fastapi import HTTPException

    user = await get_user(
        request, _oauth_token=None, bearer_credentials=await bearer_scheme(request)
    )
    if not get_auth_manager().is_authorized_view(access_view=AccessView.WEBSITE, user=user):
        raise HTTPException(403, "Forbidden")


def airflow_login_url(next_url: str) -> str:
    """Airflow's login page, returning to ``next_url`` afterwards."""
    from airflow.api_fastapi.app import get_auth_manager

    return get_auth_manager().get_url_login(next_url=next_url)


class RecsysPlugin(AirflowPlugin):
    """Registers the Recommender page and its navigation entry."""

    name = "recsys"
    fastapi_apps = [
        {
            "app": create_app(authorize=require_airflow_login, login_url=airflow_login_url),
            "url_prefix": URL_PREFIX,
            "name": "Recommender",
        }
    ]
    external_views = [
        {
            "name": "Recommender",
            "href": f"{URL_PREFIX}/",
            "url_route": "recommender",
            "destination": "nav",
            "nav_top_level": True,
        }
    ]
