"""Facts about the Wdata service and the provider's limits, read by the config, the protocol and the UI form.

This module imports nothing of the provider: Airflow reads ``get_provider_info()`` (and so the form built from
these) while it is still starting.
"""

from __future__ import annotations

REGIONS = ("us", "eu", "apac")
DEFAULT_REGION = "us"

#: The API base of each region; every API path is relative to it.
API_BASE_URLS = {
    "us": "https://h.app.wdesk.com/s/wdata/prep",
    "eu": "https://h.eu.wdesk.com/s/wdata/prep",
    "apac": "https://h.apac.wdesk.com/s/wdata/prep",
}
#: The OAuth2 token endpoint of each region.
TOKEN_URLS = {
    "us": "https://api.app.wdesk.com/iam/v1/oauth2/token",
    "eu": "https://api.eu.wdesk.com/iam/v1/oauth2/token",
    "apac": "https://api.apac.wdesk.com/iam/v1/oauth2/token",
}
#: The token path served by a host that is not one of the regions' (a private environment, the simulator).
TOKEN_PATH = "/iam/v1/oauth2/token"

#: Seconds to connect and to wait for an answer, unless the connection's ``timeout`` extra says otherwise.
DEFAULT_TIMEOUT_SECONDS = 30
#: The longest ``timeout`` taken: the service ends a request after about 29 s, and the HTTP libraries fail on a
#: deadline past what their clocks hold.
MAX_TIMEOUT_SECONDS = 3600
#: The service's limit on a workspaceId.
MAX_WORKSPACE_ID_LENGTH = 40
#: The service refuses batches larger than this.
MAX_BATCH_SIZE = 100
#: Page size used by ``list_connections`` (the service accepts 1..1000).
MAX_PAGE_SIZE = 1000
