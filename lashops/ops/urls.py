from django.urls import path

from lashops.ops import views

app_name = "ops"

urlpatterns = [
    path("", views.fleet, name="fleet"),
    path("fleet.json", views.fleet_json, name="fleet_json"),
    path("sessions/<str:session_id>/", views.session, name="session"),
    path("sessions/<str:session_id>/state.json", views.session_json, name="session_json"),
    path("processes/", views.processes, name="processes"),
    path("processes/state.json", views.processes_json, name="processes_json"),
    path("processes/<str:process_id>/", views.process, name="process"),
    path("processes/<str:process_id>/state.json", views.process_json, name="process_json"),
    path("mobs/<str:mob_id>/", views.mob, name="mob"),
    path("mobs/<str:mob_id>/state.json", views.mob_json, name="mob_json"),
]
