from django.urls import path

from . import views

urlpatterns = [
    path("orders/", views.order_list, name="order-list"),
    path("orders/new/", views.order_new, name="order-new"),
    path("orders/today/", views.orders_today_fragment, name="orders-today"),
    path("orders/<int:pk>/", views.order_detail, name="order-detail"),
    path("orders/<int:pk>/status/", views.order_status_fragment, name="order-status"),
    path("orders/<int:pk>/cancel/", views.order_cancel, name="order-cancel"),
    path("orders/baskets/", views.basket_list, name="basket-list"),
    path("orders/basket/", views.basket_new, name="basket-new"),
    path("orders/baskets/<int:pk>/", views.basket_detail, name="basket-detail"),
    path("orders/baskets/<int:pk>/results/", views.basket_results_fragment, name="basket-results"),
    path("orders/schedules/", views.schedule_list, name="schedule-list"),
    path("orders/schedules/<int:pk>/toggle/", views.schedule_toggle, name="schedule-toggle"),
    path("trading-halt/", views.trading_halt, name="trading-halt"),
]
