from django_otp.admin import OTPAdminSite


class AirlockAdminSite(OTPAdminSite):
    site_header = "Airlock administration"
    site_title = "Airlock admin"
    index_title = "Inventory, vault, people and policy"
