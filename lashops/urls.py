from django.conf import settings
from django.contrib import admin
from django.contrib.staticfiles.urls import staticfiles_urlpatterns
from django.urls import URLPattern, URLResolver, include, path

from lashops.api import api

urlpatterns: list[URLPattern | URLResolver] = [
    path("admin/", admin.site.urls),
    path("api/", api.urls),
    path("ops/", include("lashops.ops.urls")),
]

if settings.DEBUG:  # daphne does not serve static files; production collects them behind the proxy
    urlpatterns += staticfiles_urlpatterns()
