from django.contrib import admin
from django.core import checks

from lashops.core.admin_tools import check_admin_scoping

admin.site.site_header = "LashOps"
admin.site.site_title = "LashOps"
admin.site.index_title = "Operations"

# Every registered admin is workspace-scoped and declares what it lets staff change.
checks.register(check_admin_scoping, checks.Tags.admin)
