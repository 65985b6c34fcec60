"""The stack: network, data, functions, API, fleets, autoscaling, observability."""

from __future__ import annotations

import re

from aws_cdk import CfnOutput, Stack
from constructs import Construct

from .api import Api
from .autoscaling import Autoscaling
from .config import DeployConfig
from .data import Data
from .fleets import Fleets
from .functions import Functions
from .nag import acknowledge
from .network import Network
from .observability import Observability
from .tier import Tier


def name_prefix(stack_name: str) -> str:
    """The prefix of every named resource (groups, queues, alarms, dashboard), from the stack's name:
    a second stack in the account (``-c infaas:stack_name=Staging``) collides with nothing."""
    return re.sub(r"[^a-z0-9]+", "-", stack_name.lower()).strip("-") or "infaas"


class InfaasStack(Stack):
    def __init__(self, scope: Construct, id: str, *, config: DeployConfig, prefix: str | None = None, **kwargs) -> None:
        super().__init__(scope, id, description="infaas: model-less inference serving (API, workers, autoscaler)",
                         **kwargs)
        prefix = prefix or name_prefix(id)
        self.config = config
        self.network = Network(self, "Network", config=config)
        self.data = Data(self, "Data", config=config, prefix=prefix)
        # the serverless CPU tier (-c infaas:tier=on|off): the inference functions the selector may invoke
        self.tier = Tier(self, "Tier", config=config, data=self.data) if config.tier else None
        self.functions = Functions(self, "Functions", config=config, data=self.data, network=self.network,
                                   tier=self.tier)
        self.api = Api(self, "Api", config=config, frontend=self.functions.frontend, selector=self.functions.selector,
                       authorizer=self.functions.authorizer, prefix=prefix)
        self.fleets = Fleets(self, "Fleets", config=config, data=self.data, network=self.network, prefix=prefix)
        self.autoscaling = Autoscaling(self, "Autoscaling", config=config, data=self.data, fleets=self.fleets,
                                       autoscaler=self.functions.autoscaler, prefix=prefix)
        self.observability = Observability(
            self, "Observability", config=config, data=self.data, fleets=self.fleets, rest_apis=self.api.rest_apis,
            functions={"frontend": self.functions.frontend, "selector": self.functions.selector,
                       "autoscaler": self.functions.autoscaler, "authorizer": self.functions.authorizer},
            prefix=prefix, tier=self.tier)

        CfnOutput(self, "ApiUrl", value=self.api.rest_api.url,
                  description="base URL for API keys: Authorization: Bearer <key> (infaas tenants create)")
        CfnOutput(self, "IamApiUrl", value=self.api.iam_api.url, description="base URL for IAM callers: sign with SigV4")
        CfnOutput(self, "TableName", value=self.data.table.table_name)
        CfnOutput(self, "BucketName", value=self.data.bucket.bucket_name)
        CfnOutput(self, "QueuePrefix", value=self.data.queue_prefix)
        CfnOutput(self, "Dashboard", value=self.observability.dashboard.dashboard_name)
        acknowledge(self)
