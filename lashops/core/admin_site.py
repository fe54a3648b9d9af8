from django.contrib import admin

admin.site.site_header = "LashOps"
admin.site.site_title = "LashOps"
admin.site.index_title = "Operations"
