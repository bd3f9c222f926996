"""SigV4 signing of the OTLP output's requests (``LOGADAPTER_OTLP_SIGV4``), by botocore, with
credentials from its standard chain (the ECS task role included): what CloudWatch's own OTLP
endpoint (``https://logs.<region>.amazonaws.com/v1/logs``) asks for."""

from __future__ import annotations

from typing import Any

import botocore.session
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.exceptions import BotoCoreError


class SigV4Signer:
    def __init__(self, service: str, region: str) -> None:
        self.service = service
        self.region = region
        self._credentials: Any = None

    def signed_headers(self, url: str, headers: dict[str, str], body: bytes) -> dict[str, str]:
        """``headers`` with the SigV4 ones added; blocks (credentials may be fetched, from the
        ECS agent for a task role), so it runs in a thread. Raises ``LookupError`` while no
        credentials can be found."""
        try:
            if self._credentials is None:
                self._credentials = botocore.session.get_session().get_credentials()
            if self._credentials is None:
                raise LookupError("no AWS credentials found")
            frozen = self._credentials.get_frozen_credentials()
        except BotoCoreError as error:  # the ECS agent or the metadata service unreachable
            raise LookupError(f"{type(error).__name__}: {error}") from error
        request = AWSRequest(method="POST", url=url, data=body, headers=headers)
        SigV4Auth(frozen, self.service, self.region).add_auth(request)
        return dict(request.headers.items())
